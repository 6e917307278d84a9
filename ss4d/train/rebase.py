"""Re-base SLat checkpoints between training stages (``python -m ss4d.train.rebase``), so a run replays from files:

* ``standardize``: a trained SLat encoder re-parametrised so its latent means come out per-channel standardised
  over a dataset's clips (:func:`ss4d.train.latents.standardize_encoder`); the statistics are written beside it;
* ``fold``: a Gaussian decoder re-based onto new latents (:func:`ss4d.train.latents.fold_latent_mean`), e.g. the
  shipped decoder with ``--std 0`` (renders as before for any input; its latent weights start at zero).

    python -m ss4d.train.rebase standardize --encoder runs/s6/slat_encoder/export/ckpts/slat_encoder \\
        --data datasets/train_r32 --feature vcolor -o runs/s6/slat_encoder_std/slat_encoder
    python -m ss4d.train.rebase fold --decoder ss4d/assets/default_model/ckpts/slat_decoder_gs \\
        --mean-from ss4d/assets/default_model/pipeline.json --std 0 -o runs/s6/decoder_init/slat_decoder_gs
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..io_utils import atomic_write_text
from ..models.checkpoint import load_model, read_model_config, save_model
from .latents import encode_slat, fold_latent_mean, slat_normalization_stats, standardize_encoder

__all__ = ["standardize", "fold", "main"]


def standardize(encoder_stem, roots, out_stem, feature="vcolor", num_frames=16) -> dict:
    """Latent statistics of ``encoder_stem`` over the first ``num_frames`` of every clip under ``roots`` (feature set
    ``feature``; None or "stored": the clips' stored feats); writes the
    standardised encoder to ``out_stem`` and the statistics to ``<out_stem>.stats.json``; returns them."""
    from ..data.dataset import ClipDataset

    if feature in ("", "stored"):
        feature = None
    enc = load_model(encoder_stem).float().eval()
    latents = []
    for root in roots:
        ds = ClipDataset(root, num_frames=num_frames, views_per_frame=0, windows="first", load_cond=False,
                         load_views=False, feature=feature)
        for i in range(len(ds)):
            s = ds[i]
            with torch.no_grad():
                latents.append(encode_slat(enc, s["coords"], s["feats"], num_frames, num_frames))
    if not latents:
        raise ValueError(f"no clips under {', '.join(map(str, roots))}")
    stats = slat_normalization_stats(latents)
    stats["clips"] = len(latents)
    standardize_encoder(enc, stats["mean"], stats["std"])
    cfg = read_model_config(encoder_stem)
    Path(out_stem).parent.mkdir(parents=True, exist_ok=True)
    save_model(enc, cfg["name"], cfg.get("args", {}), out_stem)
    atomic_write_text(Path(str(out_stem) + ".stats.json"), json.dumps(stats, indent=1), overwrite=True)
    return stats


def fold(decoder_stem, out_stem, mean, std=0.0) -> None:
    """Write ``decoder_stem`` re-based by ``fold_latent_mean(decoder, mean, std)`` to ``out_stem``."""
    dec = load_model(decoder_stem).float().eval()
    fold_latent_mean(dec, mean, std)
    cfg = read_model_config(decoder_stem)
    Path(out_stem).parent.mkdir(parents=True, exist_ok=True)
    save_model(dec, cfg["name"], cfg.get("args", {}), out_stem)


def _mean_from(path: str) -> list:
    p = Path(path)
    if p.suffix == ".json" and p.exists():
        d = json.loads(p.read_text())
        norm = d.get("args", d).get("slat_normalization") or d.get("mean") and d
        if not norm or "mean" not in norm:
            raise ValueError(f"{path}: no slat_normalization mean (a pipeline.json or a .stats.json)")
        return norm["mean"]
    return [float(x) for x in path.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ss4d.train.rebase", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("standardize", help="standardise a SLat encoder's latents over a dataset")
    s.add_argument("--encoder", required=True, help="checkpoint stem (.json + .safetensors)")
    s.add_argument("--data", nargs="+", required=True, help="clip dataset folders")
    s.add_argument("--feature", default="vcolor", help="feature set of the clips (vcolor; stored: the stored feats)")
    s.add_argument("--frames", type=int, default=16)
    s.add_argument("-o", "--output", required=True, help="output stem")
    f = sub.add_parser("fold", help="re-base a Gaussian decoder onto new latents")
    f.add_argument("--decoder", required=True, help="checkpoint stem")
    f.add_argument("--mean-from", required=True,
                   help="a pipeline.json (its slat_normalization mean), a .stats.json, or comma-separated numbers")
    f.add_argument("--std", default="0", help="one number or comma-separated per channel (0: restart)")
    f.add_argument("-o", "--output", required=True, help="output stem")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "standardize":
            st = standardize(a.encoder, a.data, a.output, a.feature, a.frames)
            print(f"{a.output}: standardised over {st['clips']} clips; latent std was "
                  + ", ".join(f"{x:.3g}" for x in st["std"]))
        else:
            std = [float(x) for x in a.std.split(",")]
            fold(a.decoder, a.output, _mean_from(a.mean_from), std[0] if len(std) == 1 else std)
            print(f"{a.output}: written")
    except (ValueError, OSError) as e:
        print(f"rebase: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
