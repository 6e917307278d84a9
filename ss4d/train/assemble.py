"""Assemble the exports of the four training stages into an official-layout pipeline folder.

`python -m ss4d.train.assemble RUNS_DIR OUT_DIR` reads `RUNS_DIR/{ss_vae,slat_vae,ss_flow,slat_flow}/export/` (the
Gaussian decoder from `RUNS_DIR/slat_decoder/export/` when that fine-tuning run exists) and
writes `OUT_DIR/pipeline.json` + `OUT_DIR/ckpts/` (fp16 weights to keep the shipped package small). Each flow keeps
the conditioning encoder it was trained with (`image_cond_model.ckpts`); when both flows used the same frozen
encoder (equal weights) it is written once (`image_cond_model.ckpt`) and the video is encoded once.

`--run STAGE=DIR` takes one stage from another run folder (e.g. `--run ss_flow=runs/default/ss_flow_aligned`,
`--run slat_decoder=runs/default/slat_decoder_hr`) instead of `RUNS_DIR/STAGE`.

`--base DIR` takes every stage that has no run folder from an existing pipeline folder (`DIR/ckpts/<key>`) and
keeps that folder's ss4d settings (`temporal_noise`, `silhouette_guidance`, `post_steps`) unless given here; e.g.
re-shipping a model with a new latent stage: `assemble runs/s5 out --base ss4d/assets/default_model`. A flow
trained with a frozen conditioner (not exported by its run) uses the checkpoint its run's `config.json` names.

`--slat-window N` (default 4) sets the latent flow's self-attention to windows of N transformer-level frames
(`SLatFlowModel(window_size=...)`): trained on short windows, its attention never saw more frames than that, and
the cost of a long clip becomes linear in its length instead of quadratic. The weights are unchanged.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from ..models.checkpoint import atomic_write, load_model, save_model
from ..models.tiny import SAMPLER

PARTS = {  # pipeline key -> (stage, exported stem)
    "sparse_structure_decoder": ("ss_vae", "sparse_structure_decoder"),
    "slat_decoder_gs": ("slat_vae", "slat_decoder_gs"),
    "sparse_structure_flow_model": ("ss_flow", "sparse_structure_flow_model"),
    "slat_flow_model": ("slat_flow", "slat_flow_model"),
    "image_cond_ss": ("ss_flow", "image_cond_model"),
    "image_cond_slat": ("slat_flow", "image_cond_model"),
}


STAGES = ("ss_vae", "slat_vae", "slat_decoder", "ss_flow", "slat_flow")


def _frozen_conditioner(run: Path) -> Path | None:
    """The checkpoint stem a run's config names for a frozen (not exported) conditioner, if any."""
    cfg = run / "config.json"
    if not cfg.is_file():
        return None
    spec = json.loads(cfg.read_text()).get("models", {}).get("conditioner", {})
    if spec.get("trainable") is False and spec.get("checkpoint"):
        return Path(spec["checkpoint"])
    return None


def assemble(runs: Path, out: Path, num_frames: int = 32, dtype=torch.float16, sampler: dict | None = None,
             slat_sampler: dict | None = None,
             slat_window: int | None = 4, stage_runs: dict | None = None, temporal_noise: str | None = None,
             color_from_input: float | None = None, base: Path | None = None) -> Path:
    runs, out = Path(runs), Path(out)
    base_args = json.loads((Path(base) / "pipeline.json").read_text())["args"] if base is not None else {}
    bad = sorted(set(stage_runs or {}) - set(STAGES))
    if bad:
        raise ValueError(f"unknown stage(s) {bad} in run overrides; stages: {', '.join(STAGES)}")
    dirs = {st: Path((stage_runs or {}).get(st, runs / st)) for st in STAGES}
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "ckpts").mkdir(parents=True)
    try:
        written = {}
        for key, (stage, stem) in PARTS.items():
            src = dirs[stage] / "export" / "ckpts" / stem
            if stem == "image_cond_model" and not Path(str(src) + ".json").is_file():
                src = _frozen_conditioner(dirs[stage]) or src
            if base is not None and not dirs[stage].exists() and not (
                    key == "slat_decoder_gs" and dirs["slat_decoder"].exists()):
                src = Path(base) / "ckpts" / key
            if key == "slat_decoder_gs" and (dirs["slat_decoder"] / "export" / "ckpts" / (stem + ".json")).is_file():
                src = dirs["slat_decoder"] / "export" / "ckpts" / stem  # decoder fine-tuned with the encoder frozen
            if not Path(str(src) + ".json").is_file():
                raise FileNotFoundError(f"{key}: no export {src}.json (train stage {stage} with an 'export' setting)")
            cfg = json.loads(Path(str(src) + ".json").read_text())
            args = dict(cfg["args"])
            if key == "slat_flow_model" and slat_window:
                args["window_size"] = int(slat_window)
            model = load_model(src)
            if key == "image_cond_slat" and _same_model(written["image_cond_ss"], (cfg["name"], args, model)):
                continue  # both flows were trained on one frozen encoder: ship it once, encode the video once
            written[key] = (cfg["name"], args, model)
            save_model(model, cfg["name"], args, tmp / "ckpts" / key, dtype=dtype)
        norm_file = dirs["slat_flow"] / "export" / "slat_normalization.json"
        norm = json.loads(norm_file.read_text()) if norm_file.is_file() or not base_args \
            else base_args["slat_normalization"]
        pipe = {"name": "SS4DVideoTo4DPipeline", "args": {
            "models": {k: f"ckpts/{k}" for k in PARTS if not k.startswith("image_cond")},
            "sparse_structure_sampler": sampler or SAMPLER, "slat_sampler": slat_sampler or sampler or SAMPLER,
            "slat_normalization": {"mean": norm["mean"], "std": norm["std"]},
            "image_cond_model": {"ckpts": {"sparse_structure_flow_model": "ckpts/image_cond_ss",
                                           "slat_flow_model": "ckpts/image_cond_slat"}}
            if "image_cond_slat" in written else {"ckpt": "ckpts/image_cond_ss"},
            "num_frames": num_frames}}
        for k in ("temporal_noise", "silhouette_guidance", "post_steps"):
            if k in base_args:
                pipe["args"][k] = base_args[k]
        if temporal_noise:
            pipe["args"]["temporal_noise"] = temporal_noise
        if color_from_input is not None:
            pipe["args"].pop("post_steps", None)
            if color_from_input > 0:
                pipe["args"]["post_steps"] = [{"name": "color_from_input", "strength": float(color_from_input)}]
        atomic_write(tmp / "pipeline.json", lambda t: Path(t).write_text(json.dumps(pipe, indent=2)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written model folder
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _same_model(a, b) -> bool:
    """Same class, arguments and weights."""
    if a[0] != b[0] or a[1] != b[1]:
        return False
    sa, sb = a[2].state_dict(), b[2].state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ss4d.train.assemble")
    ap.add_argument("runs")
    ap.add_argument("out")
    ap.add_argument("--num-frames", type=int, default=32)
    ap.add_argument("--slat-window", type=int, default=4,
                    help="latent-flow attention window in transformer-level frames (0: full attention)")
    ap.add_argument("--sampler-steps", type=int, default=SAMPLER["params"]["steps"],
                    help="Euler steps of both samplers written to pipeline.json")
    ap.add_argument("--cfg", type=float, default=SAMPLER["params"]["cfg_strength"],
                    help="classifier-free guidance strength of both samplers")
    ap.add_argument("--slat-cfg", type=float, default=None,
                    help="guidance strength of the latent-flow sampler only (default: --cfg)")
    ap.add_argument("--slat-steps", type=int, default=None,
                    help="Euler steps of the latent-flow sampler only (default: --sampler-steps)")
    ap.add_argument("--color-from-input", type=float, default=None, metavar="STRENGTH",
                    help="pipeline.json color_from_input (recolour from the input video, 0-1; 0: off; default: "
                         "off, or --base's setting)")
    ap.add_argument("--temporal-noise", choices=["independent", "shared"], default=None,
                    help="pipeline.json temporal_noise (default: not written = independent, as the official models)")
    ap.add_argument("--base", default=None, metavar="DIR",
                    help="take stages without a run folder (and the ss4d settings) from this pipeline folder")
    ap.add_argument("--run", action="append", default=[], metavar="STAGE=DIR",
                    help=f"take a stage from another run folder (stages: {', '.join(STAGES)}); repeatable")
    a = ap.parse_args(argv)
    stage_runs = {}
    for item in a.run:
        stage, sep, d = item.partition("=")
        if not sep or stage not in STAGES or not d:
            ap.error(f"--run takes STAGE=DIR with STAGE one of {', '.join(STAGES)}, got {item!r}")
        stage_runs[stage] = d
    sampler = json.loads(json.dumps(SAMPLER))
    sampler["params"].update(steps=a.sampler_steps, cfg_strength=a.cfg)
    slat_sampler = json.loads(json.dumps(sampler))
    if a.slat_cfg is not None:
        slat_sampler["params"]["cfg_strength"] = a.slat_cfg
    if a.slat_steps is not None:
        slat_sampler["params"]["steps"] = a.slat_steps
    try:
        p = assemble(Path(a.runs), Path(a.out), a.num_frames, sampler=sampler, slat_sampler=slat_sampler,
                     slat_window=a.slat_window or None,
                     stage_runs=stage_runs, temporal_noise=a.temporal_noise,
                     color_from_input=a.color_from_input, base=Path(a.base) if a.base else None)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    print(f"assembled {p} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
