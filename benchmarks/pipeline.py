"""End-to-end `VideoTo4DPipeline` timing: per-stage seconds and peak RSS for a 32-frame clip, then the rasterizer
table (benchmarks/rasterizer.py). Each pipeline run is a fresh subprocess so peak RSS is its own.

Usage: python benchmarks/pipeline.py [--model DIR] [--clip DIR] [--frames 32] [--threads 2] [--no-raster]
Without --model: the bundled default model if present, else a tiny random-weight model (plumbing timing only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, resource, torch
torch.set_num_threads(int(sys.argv[4]))
from ss4d import VideoTo4DPipeline
from ss4d.media.read import read_frames
from ss4d.pipeline.frames import select_frames
t0 = time.perf_counter()
pipe = VideoTo4DPipeline.from_pretrained(sys.argv[1] or None)
load = time.perf_counter() - t0
clip = read_frames(sys.argv[2])
idx = select_frames(len(clip.frames), num=int(sys.argv[3]))
frames = [clip.frames[i] for i in idx]
t0 = time.perf_counter()
r = pipe(frames, seed=0)
total = time.perf_counter() - t0
print(json.dumps({"load": load, "total": total, "timings": r.timings, "frames": len(frames),
                  "voxels": sum(r.meta["num_voxels"]), "gaussians": sum(len(g) for g in r.gaussians),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--clip", default=str(ROOT / "examples" / "rose"))
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-raster", action="store_true")
    a = ap.parse_args()
    model = a.model
    what = "given model"
    if model is None:
        from ss4d.pipeline.checkpoint_folder import default_model_dir

        if (default_model_dir() / "pipeline.json").exists():
            model, what = "", "bundled default model"
        else:
            from ss4d.models.tiny import build_tiny, write_model_folder

            model = tempfile.mkdtemp(prefix="ss4d-bench-model-")
            write_model_folder(model, build_tiny(0))
            what = "tiny RANDOM-weight model (no default model shipped yet)"
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    out = subprocess.run([sys.executable, "-c", CHILD, model or "", a.clip, str(a.frames), str(a.threads)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        print(out.stderr[-3000:])
        sys.exit(out.returncode)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"pipeline: {what}; clip {a.clip}; {r['frames']} frames; threads={a.threads}; "
          f"{r['voxels']} voxels, {r['gaussians']} Gaussians")
    print("| stage | seconds |\n|---|---:|")
    print(f"| load models | {r['load']:.2f} |")
    for k, v in r["timings"].items():
        print(f"| {k} | {v:.2f} |")
    print(f"| **total (excl. load)** | **{r['total']:.2f}** |")
    print(f"peak RSS: {r['peak_rss_mb']:.0f} MB  (targets: <= 60 s, <= 4096 MB)")
    if not a.no_raster:
        print()
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "rasterizer.py")], env=env, cwd=ROOT)


if __name__ == "__main__":
    main()
