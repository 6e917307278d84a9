"""``ss4d data ...`` subcommands. :func:`add_data_parser` adds the ``data`` command (with its own subcommands) to
the main parser's subparsers; each subcommand sets ``func`` to a callable ``func(args) -> exit status``.

    ss4d data render ASSETS... -o DATASET [--frames T] [--views V] [--size S] [--resolution R] [--input-paths K]
                     [--engine cycles|workbench] [--samples N] [--workers W] [--seed SEED] ...
"""
from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_data_parser", "cmd_data_render", "main"]


def _positive(kind=int, minimum=1):
    def conv(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {s}")
        return v
    return conv


def cmd_data_render(a) -> int:
    from .blender import BpyMissingError, have_bpy

    if not have_bpy():
        print("ss4d data render: error: Blender's Python module `bpy` is not installed. Rendering animated assets "
              "needs the data extra: pip install ss4d[data]   (bpy==5.0.1, CPython 3.11)", file=sys.stderr)
        return 2
    from .render_assets import format_summary, render_assets

    try:
        summary = render_assets(
            a.assets, a.output, num_frames=a.frames, num_views=a.views, size=a.size, cond_size=a.cond_size,
            resolution=a.resolution, input_paths=a.input_paths, engine=a.engine, samples=a.samples,
            denoise=a.denoise, workers=a.workers, threads=a.threads, seed=a.seed, max_vertices=a.max_vertices,
            clips=a.clip or (), max_clips=a.max_clips, per_frame_views=a.per_frame_views, timeout=a.timeout,
            in_process=a.in_process, progress=None if a.quiet else (lambda m: print(m, flush=True)))
    except BpyMissingError as e:
        print(f"ss4d data render: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as e:
        print(f"ss4d data render: error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    if a.summary_json:
        with open(a.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=1, default=str)
    return 0 if summary["written"] or summary["already_done"] or not summary["assets"] else 1


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``data`` (with ``render``) to ``subparsers`` (from ``parser.add_subparsers()``); returns its parser."""
    d = subparsers.add_parser("data", help="build training data (render animated 3D assets)",
                              description="Build 4D training data sets.")
    dsub = d.add_subparsers(dest="data_command", required=True)
    r = dsub.add_parser(
        "render", help="render animated assets (glb/gltf/fbx/obj/...) into a clip dataset with Blender",
        description="Render every animation clip of the given assets with Blender (bpy): per clip T frames, "
                    "per frame V Hammersley views (radius 2, fov 40 deg) + K monocular input camera paths as RGBA "
                    "PNGs, the evaluated mesh, its surface voxels and per-voxel colour features, all in one "
                    "canonical box per clip. Resumable; bad assets are logged and skipped. Needs the data extra "
                    "(pip install ss4d[data]).")
    r.add_argument("assets", nargs="+", help="asset files or folders (searched recursively)")
    r.add_argument("-o", "--output", required=True, help="dataset folder (created; an existing one is resumed)")
    r.add_argument("--frames", type=_positive(), default=16, help="frames per clip, uniform over the clip (16)")
    r.add_argument("--views", type=_positive(), default=150, help="Hammersley views per frame (150)")
    r.add_argument("--size", type=_positive(), default=512, help="view image side in pixels (512)")
    r.add_argument("--cond-size", type=_positive(), default=None, help="input-video side in pixels (--size)")
    r.add_argument("--resolution", type=_positive(), default=64, help="voxel grid resolution (64)")
    r.add_argument("--input-paths", type=_positive(int, 0), default=1,
                   help="monocular input camera paths per clip (1)")
    r.add_argument("--engine", choices=["cycles", "workbench"], default="cycles")
    r.add_argument("--samples", type=_positive(), default=128, help="Cycles samples per pixel (128)")
    r.add_argument("--denoise", action="store_true", help="Cycles denoising (OpenImageDenoise)")
    r.add_argument("--workers", type=_positive(), default=1, help="assets rendered in parallel (1)")
    r.add_argument("--threads", type=_positive(int, 0), default=1,
                   help="render / torch threads per worker (1; 0 = automatic)")
    r.add_argument("--seed", type=int, default=0, help="camera randomness (Hammersley offsets, input paths)")
    r.add_argument("--clip", action="append", default=None, metavar="PATTERN",
                   help="only clips whose name matches this fnmatch pattern (repeatable)")
    r.add_argument("--max-clips", type=_positive(int, 0), default=0, help="at most this many clips per asset")
    r.add_argument("--max-vertices", type=_positive(int, 0), default=1_000_000,
                   help="skip assets with at least this many vertices (1000000; 0 = no limit)")
    r.add_argument("--per-frame-views", action="store_true", help="a new Hammersley offset for every frame")
    r.add_argument("--timeout", type=float, default=None, help="seconds per asset before its worker is killed")
    r.add_argument("--in-process", action="store_true", help="render in this process (debugging)")
    r.add_argument("--summary-json", default=None, help="also write the run summary to this JSON file")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=cmd_data_render)
    g = dsub.add_parser("procedural", help="procedural animated clips (no Blender), same dataset layout")
    g.add_argument("-o", "--output", required=True, help="dataset folder (an existing one is resumed)")
    g.add_argument("--clips", type=_positive(), default=100)
    g.add_argument("--frames", type=_positive(), default=16)
    g.add_argument("--views", type=_positive(), default=24)
    g.add_argument("--size", type=_positive(), default=256)
    g.add_argument("--cond-size", type=_positive(), default=None)
    g.add_argument("--resolution", type=_positive(), default=64)
    g.add_argument("--workers", type=_positive(int, 0), default=0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=cmd_data_procedural)
    return d


def cmd_data_procedural(a) -> int:
    from .dataset import write_procedural_dataset

    s = write_procedural_dataset(a.output, a.clips, T=a.frames, R=a.resolution, V=a.views, size=a.size,
                                 cond_size=a.cond_size, seed=a.seed, workers=a.workers)
    print(f"procedural dataset {s['root']}: {s['written']} written, {s['skipped']} already done, "
          f"{s['failed']} failed (see errors.jsonl)")
    return 0 if not s["failed"] else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="ss4d")
    add_data_parser(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
