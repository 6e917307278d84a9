"""The `ss4d` command: generate 4D assets from videos, render and export saved results."""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path


def _check_output(out: Path, overwrite: bool, kind: str = "folder", flag: str = "-o/--output") -> None:
    """Refuse an unusable output before any work (one error line naming the CLI flags): an existing non-empty folder
    (or file) without --overwrite, a target of the wrong kind, or a place where nothing can be created."""
    import tempfile

    from .errors import InputError

    if out.exists() or out.is_symlink():
        if kind == "folder" and not out.is_dir():
            raise InputError(f"{flag} {out} is a file, not a folder")
        if kind == "file" and out.is_dir():
            raise InputError(f"{flag} {out} is a folder, not a file")
        if not overwrite and (kind == "file" or any(out.iterdir())):
            what = "already exists" if kind == "file" else "already exists and is not empty"
            raise InputError(f"{flag} {out} {what} (add --overwrite to replace it, or pick another {flag})")
    anc = Path(os.path.abspath(out)).parent  # results are written next to the target, then renamed into place
    while not (anc.exists() or anc.is_symlink()):
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{flag} {out} cannot be created: {anc} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=anc, prefix=".ss4d-write-check-"))
    except OSError as e:
        raise InputError(f"{flag} {out} is not writable: cannot create anything in {anc} ({e.strerror})") from None


def cmd_generate(a) -> int:
    import torch

    from .export.save import save_result
    from .media.read import read_frames
    from .pipeline.matting import matte_clip
    from .pipeline.video_to_4d import VideoTo4DPipeline

    out = Path(a.output)
    _check_output(out, a.overwrite)
    if a.threads:
        torch.set_num_threads(a.threads)
    clip = read_frames(a.input)
    frames = matte_clip(clip.frames, mode=a.matte, masks=a.masks)
    pipe = VideoTo4DPipeline.from_pretrained(a.model, device=a.device, dtype=a.dtype,
                                             dinov2_weights=a.dinov2_weights)
    color = {"model": None, "on": True, "off": False}[a.color_from_input]
    print(f"ss4d: {len(frames)} frames in {a.input} ({clip.width}x{clip.height}, alpha={clip.has_alpha})")
    result = pipe.generate(frames, num_frames=a.frames, stride=a.stride, seed=a.seed, steps=a.steps, cfg=a.cfg,
                           fps=clip.fps, progress=not a.quiet, color_from_input=color)
    print("ss4d: " + result.summary())
    path = save_result(result, out, overwrite=a.overwrite, renders=not a.no_renders, render_size=a.render_size)
    print(f"ss4d: wrote {path}")
    return 0


def cmd_render(a) -> int:
    from .export.container import load_4d
    from .export.renders import write_all_renders

    out = Path(a.output or Path(a.file).with_suffix(""))
    _check_output(out, a.overwrite)
    gaussians, meta, coords = load_4d(a.file)
    paths = write_all_renders(out, gaussians, None, coords, float(meta.get("fps", 16)), resolution=a.size)
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def cmd_export(a) -> int:
    from .errors import InputError
    from .export.container import load_4d
    from .export.save import export_glb, export_plys

    out = Path(a.output or Path(a.file).with_suffix(""))
    if a.format == "ply":
        _check_output(out / "ply", a.overwrite)
    else:
        if a.up is not None or a.sh_degree is not None:
            raise InputError("--up and --sh-degree apply to --format ply only (a GLB is always y-up)")
        _check_output(out.with_suffix(".glb"), a.overwrite, kind="file")
    gaussians, meta, coords = load_4d(a.file)
    if a.format == "ply":
        paths = export_plys(gaussians, out / "ply", overwrite=a.overwrite, up=a.up or "z", sh_degree=a.sh_degree or 0)
        print(f"wrote {len(paths)} PLY files to {out / 'ply'}")
    else:
        p = export_glb(gaussians, coords, out.with_suffix(".glb"), float(meta.get("fps", 16)))
        print(f"wrote {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ss4d", description="Monocular video to 4D Gaussians (SS4D).")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="video / image folder -> 4D asset (renders + exports)")
    g.add_argument("input", help="video file (mp4/webm/mov/mkv/gif/webp), image folder or image file list")
    g.add_argument("-o", "--output", required=True,
                   help="output folder (new or empty; an existing non-empty one only with --overwrite)")
    g.add_argument("--model", default=None, help="pipeline folder (pipeline.json + ckpts/); default: bundled model")
    g.add_argument("--frames", type=int, default=None, help="number of frames to use (uniform over the clip)")
    g.add_argument("--stride", type=int, default=None, help="use every K-th frame instead")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--steps", type=int, default=None, help="sampler steps per stage (default: pipeline.json)")
    g.add_argument("--cfg", type=float, default=None, help="classifier-free guidance strength")
    g.add_argument("--color-from-input", choices=["model", "on", "off"], default="model",
                   help="recolour the Gaussians from the input video (default: the model's pipeline.json setting)")
    g.add_argument("--matte", choices=["auto", "alpha", "key", "none"], default="auto")
    g.add_argument("--masks", default=None, help="folder of your own masks (grayscale, one per frame)")
    g.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    g.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="fp32")
    g.add_argument("--dinov2-weights", default=None, help="dinov2_vitl14_reg4_pretrain.pth for official models")
    g.add_argument("--threads", type=int, default=None)
    g.add_argument("--no-renders", action="store_true", help="write exports only")
    g.add_argument("--render-size", type=int, default=256, help="side of the rendered videos in pixels")
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser("render", help="render videos from a saved .ss4d file")
    r.add_argument("file")
    r.add_argument("-o", "--output", default=None)
    r.add_argument("--size", type=int, default=256)
    r.add_argument("--overwrite", action="store_true")
    r.set_defaults(func=cmd_render)
    e = sub.add_parser("export", help="export a saved .ss4d file as PLY frames or an animated GLB")
    e.add_argument("file")
    e.add_argument("--format", choices=["ply", "glb"], required=True)
    e.add_argument("-o", "--output", default=None,
                   help="PLYs go to OUTPUT/ply/, the GLB to OUTPUT.glb (default: the file's name without .ss4d)")
    e.add_argument("--up", choices=["z", "y", "y-down"], default=None,
                   help="PLY up axis: z (ss4d, default), y (x, z, -y: glTF/three.js style viewers) or y-down "
                        "(x, -z, y: the official TRELLIS save_ply)")
    e.add_argument("--sh-degree", type=int, choices=[0, 1, 2, 3], default=None,
                   help="pad the PLY with zero f_rest_* for this SH degree (3: the 45 the INRIA 3DGS loader expects)")
    e.add_argument("--overwrite", action="store_true")
    e.set_defaults(func=cmd_export)
    from .data.cli import add_data_parser

    add_data_parser(sub)
    from .eval.cli import add_evaluate_parser

    add_evaluate_parser(sub)
    t = sub.add_parser("train", help="train a stage from a JSON config (same as python -m ss4d.train)")
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=lambda a: __import__("ss4d.train.__main__", fromlist=["main"]).main(a.rest))
    return p


def main(argv=None) -> int:
    from .errors import InputError
    from .models.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, CheckpointError) as e:
        print(f"ss4d: error: {e}", file=sys.stderr)
        return 2
    except FileExistsError as e:  # an output appeared while working: name the CLI flag, not the Python keyword
        print(f"ss4d: error: {str(e).replace('pass overwrite=True', 'add --overwrite')}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"ss4d: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ss4d: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    warnings.simplefilter("default")
    sys.exit(main())
