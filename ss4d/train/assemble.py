"""Assemble the exports of the four training stages into an official-layout pipeline folder.

`python -m ss4d.train.assemble RUNS_DIR OUT_DIR` reads `RUNS_DIR/{ss_vae,slat_vae,ss_flow,slat_flow}/export/` (the
Gaussian decoder from `RUNS_DIR/slat_decoder/export/` when that fine-tuning run exists) and
writes `OUT_DIR/pipeline.json` + `OUT_DIR/ckpts/` (fp16 weights to keep the shipped package small). Each flow keeps
the conditioning encoder it was trained with (`image_cond_model.ckpts`).

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


def assemble(runs: Path, out: Path, num_frames: int = 32, dtype=torch.float16, sampler: dict | None = None,
             slat_window: int | None = 4) -> Path:
    runs, out = Path(runs), Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "ckpts").mkdir(parents=True)
    for key, (stage, stem) in PARTS.items():
        src = runs / stage / "export" / "ckpts" / stem
        if key == "slat_decoder_gs" and (runs / "slat_decoder" / "export" / "ckpts" / (stem + ".json")).is_file():
            src = runs / "slat_decoder" / "export" / "ckpts" / stem  # decoder fine-tuned with the encoder frozen
        cfg = json.loads(Path(str(src) + ".json").read_text())
        args = dict(cfg["args"])
        if key == "slat_flow_model" and slat_window:
            args["window_size"] = int(slat_window)
        model = load_model(src)
        save_model(model, cfg["name"], args, tmp / "ckpts" / key, dtype=dtype)
    norm = json.loads((runs / "slat_flow" / "export" / "slat_normalization.json").read_text())
    pipe = {"name": "SS4DVideoTo4DPipeline", "args": {
        "models": {k: f"ckpts/{k}" for k in PARTS if not k.startswith("image_cond")},
        "sparse_structure_sampler": sampler or SAMPLER, "slat_sampler": sampler or SAMPLER,
        "slat_normalization": {"mean": norm["mean"], "std": norm["std"]},
        "image_cond_model": {"ckpts": {"sparse_structure_flow_model": "ckpts/image_cond_ss",
                                       "slat_flow_model": "ckpts/image_cond_slat"}},
        "num_frames": num_frames}}
    atomic_write(tmp / "pipeline.json", lambda t: Path(t).write_text(json.dumps(pipe, indent=2)))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


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
    a = ap.parse_args(argv)
    sampler = json.loads(json.dumps(SAMPLER))
    sampler["params"].update(steps=a.sampler_steps, cfg_strength=a.cfg)
    p = assemble(Path(a.runs), Path(a.out), a.num_frames, sampler=sampler, slat_window=a.slat_window or None)
    size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    print(f"assembled {p} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
