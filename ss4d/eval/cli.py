"""``ss4d evaluate``: score a model, its baselines and/or other methods' renders by the ss4d protocol.

Wire into the main parser with ``add_evaluate_parser(subparsers)``; the command is ``cmd_evaluate``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ss4d.data.cli import _positive  # the same checked number parser as `ss4d data`

__all__ = ["add_evaluate_parser", "cmd_evaluate", "config_from_args"]


def _offsets(s: str) -> tuple:
    try:
        vals = tuple(int(round(float(x))) for x in s.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--views: comma-separated degrees, got {s!r}") from None
    if not vals or vals[0] % 360 != 0:
        raise argparse.ArgumentTypeError("--views: the first offset must be 0 (the input view)")
    return vals


def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    e = subparsers.add_parser(
        "evaluate", help="score a model / baselines / other methods' renders by the ss4d evaluation protocol",
        description="Ground truth from animated assets (Blender), the model and its baselines aligned and rendered "
                    "at the protocol's views, or any method's renders (<asset>/<view>/<frame>.png); writes "
                    "report.json, report.md, plots/ and sheets/ into the report folder (resumable).")
    e.add_argument("--assets", nargs="+", required=True, metavar="PATH",
                   help="animated asset files or folders (searched recursively), or procedural:SEED:COUNT for "
                        "COUNT procedural clips of master seed SEED (the default model trained on seed 0)")
    e.add_argument("-o", "--output", required=True, help="report folder (created; an existing one is resumed)")
    e.add_argument("--model", default=None, help="pipeline folder (pipeline.json + ckpts/) to evaluate")
    e.add_argument("--name", default="ss4d", help="name of the model in the report (ss4d)")
    e.add_argument("--baselines", default="",
                   help="comma list of baselines of --model: per-frame (temporal modules and every non-SS4D addition "
                        "off), static, ablations (one row per non-SS4D addition switched off: no-shared-noise, "
                        "no-color-transfer, no-silhouette-guidance, or name them); the empty baseline (background "
                        "only) is always scored")
    e.add_argument("--include-training-assets", action="store_true",
                   help="put assets the model's training record (training.json) lists as trained or tuned on into "
                        "the headline mean (they are always marked)")
    e.add_argument("--predictions", action="append", default=[], metavar="[NAME=]DIR",
                   help="score renders laid out as DIR/<asset>/<view>/<frame>.png (repeatable)")
    g = e.add_argument_group("protocol")
    g.add_argument("--clip", default=None, help="clip name or pattern (default: each asset's first clip)")
    g.add_argument("--frames", type=_positive(), default=32, help="frames per clip, uniform (32)")
    g.add_argument("--size", type=_positive(), default=512, help="render side in pixels (512)")
    g.add_argument("--views", type=_offsets, default=(0, 90, 180, 270),
                   help="azimuth offsets from the input view, first 0 (0,90,180,270)")
    g.add_argument("--resolution", type=_positive(), default=64, help="ground-truth voxel grid (64)")
    g.add_argument("--engine", choices=["cycles", "workbench"], default="cycles")
    g.add_argument("--samples", type=_positive(), default=64, help="Cycles samples per pixel (64)")
    g.add_argument("--denoise", action="store_true", help="Cycles denoising")
    g.add_argument("--seed", type=int, default=0, help="input azimuth per asset, model noise, alignment subsets")
    g.add_argument("--gt-timeout", type=float, default=None, help="seconds per asset for the Blender worker")
    m = e.add_argument_group("model")
    m.add_argument("--steps", type=_positive(), default=None, help="sampler steps per stage (pipeline.json)")
    m.add_argument("--cfg", type=float, default=None, help="classifier-free guidance strength")
    m.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    m.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    m.add_argument("--dinov2-weights", default=None)
    m.add_argument("--input-yaw", type=float, default=None, metavar="DEG",
                   help="yaw of the input camera in the model's output frame, for the yaw error and the fixed-yaw "
                        "scores (default: the model's training.json, else 0)")
    a = e.add_argument_group("alignment")
    a.add_argument("--align-size", type=_positive(), default=64, help="proxy render side for the pose refinement")
    a.add_argument("--align-points", type=_positive(), default=8000,
                   help="proxy points per frame in the pose refinement (8000; 7 per Gaussian)")
    a.add_argument("--align-step", type=float, default=5.0, help="coarse azimuth step in degrees (5)")
    n = e.add_argument_group("network metrics (not computed without weights)")
    n.add_argument("--lpips-weights", default=None,
                   help="folder with vgg16-397923af.pth + vgg.pth, or TRUNK,HEADS files")
    n.add_argument("--clip-weights", default=None, help="CLIP ViT-B/32 visual state dict")
    n.add_argument("--i3d-weights", default=None, help="I3D (pytorch-i3d) state dict for FVD")
    e.add_argument("--sheet-frames", type=_positive(), default=8, help="frames per contact sheet row (8)")
    e.add_argument("--threads", type=_positive(int, 0), default=0, help="torch / Blender threads (0: automatic)")
    e.add_argument("--in-process", action="store_true", help="render the ground truth in this process")
    e.add_argument("--quiet", action="store_true")
    e.set_defaults(func=cmd_evaluate)
    return e


def _predictions(specs) -> list:
    out = []
    for s in specs:
        name, folder = None, s
        if "=" in s:
            left, right = s.split("=", 1)
            if left and "/" not in left and "\\" not in left:
                name, folder = left, right
        out.append((name or Path(folder.rstrip("/")).name or "predictions", folder))
    return out


def config_from_args(a):
    from .protocol import EvalConfig, GTSettings

    gt = GTSettings(num_frames=a.frames, size=a.size, view_offsets=tuple(a.views), resolution=a.resolution,
                    engine=a.engine, samples=a.samples, denoise=a.denoise, seed=a.seed, clip=a.clip,
                    threads=a.threads)
    return EvalConfig(assets=list(a.assets), output=a.output, gt=gt, model=a.model, name=a.name,
                      baselines=tuple(b.strip() for b in a.baselines.split(",") if b.strip()),
                      predictions=_predictions(a.predictions), seed=a.seed, steps=a.steps, cfg=a.cfg,
                      device=a.device, dtype=a.dtype, dinov2_weights=a.dinov2_weights,
                      lpips_weights=a.lpips_weights, clip_weights=a.clip_weights, i3d_weights=a.i3d_weights,
                      align={"size": a.align_size, "max_points": a.align_points, "az_step": a.align_step},
                      sheet_frames=a.sheet_frames, gt_timeout=a.gt_timeout, in_process=a.in_process,
                      threads=a.threads, include_training_assets=a.include_training_assets, input_yaw_deg=a.input_yaw)


def cmd_evaluate(a) -> int:
    from .protocol import evaluate

    cfg = config_from_args(a)
    report = evaluate(cfg, progress=None if a.quiet else print)
    scored = sum(1 for x in report["assets"] if x["scored"])
    print(f"ss4d evaluate: {scored}/{len(report['assets'])} asset(s) scored, {len(report['results'])} method(s) "
          f"-> {Path(a.output) / 'report.md'}")
    return 0 if scored else 1
