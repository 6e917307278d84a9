"""Benchmark the data toolkit on animated assets (needs `bpy`: pip install ss4d[data]).

    python benchmarks/data.py [--asset ../shared/data/assets/Fox.glb] [--threads 1] [--renders 6]
                              [--samples 8] [--sizes 128 256] [--views 24] [--feature-size 256] [--json out.json]

Reports, in this process with ``--threads`` render / torch threads:

* renders/s at each size for Cycles (``--samples`` spp, CPU, no denoising) and Workbench (the first Workbench
  render of a process initialises the GPU context - software OpenGL here - and is reported separately);
* mesh evaluation per frame (depsgraph at a new frame + evaluated triangle mesh);
* voxelisation per frame (exact surface voxels at 64^3 of the evaluated mesh) for every ``--voxel-asset``;
* feature time per frame (``voxel_features`` with the colour encoder: ``--views`` views of ``--feature-size`` px,
  PNG decoding excluded) and the same for the TRELLIS setting (150 views at 512 px).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ASSETS = ROOT.parent / "shared" / "data" / "assets"


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--asset", default=str(DEFAULT_ASSETS / "Fox.glb"), help="asset rendered for the timings")
    p.add_argument("--voxel-asset", action="append", default=None,
                   help="assets whose evaluated meshes are voxelised (default: Fox, Quaternius_Frog, RobotExpressive)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--renders", type=int, default=6, help="timed renders per configuration")
    p.add_argument("--samples", type=int, default=8, help="Cycles samples per pixel")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--views", type=int, default=24)
    p.add_argument("--feature-size", type=int, default=256)
    p.add_argument("--no-trellis-features", action="store_true", help="skip the 150 x 512^2 feature timing")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, a.threads)))

    import numpy as np
    import torch

    from ss4d.data import blender as B

    if not B.have_bpy():
        print(B.BPY_MISSING_MESSAGE)
        return 2
    torch.set_num_threads(max(1, a.threads))
    bpy = B.require_bpy()
    from ss4d.data.features import voxel_features
    from ss4d.data.hammersley import hammersley_cameras
    from ss4d.data.voxelize import voxelize_mesh

    results: dict = {"threads": a.threads, "asset": a.asset, "samples": a.samples, "renders": {}}

    def load(path):
        B.reset_scene()
        B.import_asset(path)
        clip = B.list_clips()[0]
        rest = B.RestState()
        root = B._canonical_root()
        visible = B._render_visible_objects()
        B.activate_clip(clip, rest)
        frames = B.sample_frames(clip.frame_start, clip.frame_end, 8)
        center, scale, _ = B.measure_clip(clip, frames, visible)
        B._set_normalization(root, center, scale)
        bpy.context.view_layer.update()
        return clip, frames, visible

    # ---------------- renders ----------------
    clip, frames, visible = load(a.asset)
    print(f"asset {Path(a.asset).name}, clip {clip.name!r}, threads {a.threads}, bpy {bpy.app.version_string}")
    cam_obj = B.setup_camera()
    B.setup_lights()
    tmp = Path(tempfile.mkdtemp(prefix="ss4d_bench_"))
    print(f"{'engine':<22}{'size':>6}{'renders/s':>12}{'s/render':>10}")
    for engine in ("cycles", "workbench"):
        for size in a.sizes:
            st = B.RenderSettings(engine=engine, samples=a.samples, size=size, threads=a.threads)
            B.setup_render(st)
            cams = hammersley_cameras(a.renders + 1, width=size, seed=0)
            B.set_frame(float(frames[len(frames) // 2]))
            times = []
            for i, cam in enumerate(cams):
                B.place_camera(cam_obj, cam, size)
                t0 = time.perf_counter()
                B.render_still(tmp / f"{engine}_{size}_{i}.png")
                times.append(time.perf_counter() - t0)
            if engine == "workbench" and "workbench_first_render_s" not in results:
                results["workbench_first_render_s"] = times[0]
            t = sum(times[1:]) / max(1, len(times) - 1)  # the first render of a configuration is warm-up
            name = f"{engine} {a.samples} spp" if engine == "cycles" else engine
            results["renders"][f"{engine}_{size}"] = {"renders_per_s": 1 / t, "s_per_render": t}
            print(f"{name:<22}{size:>6}{1 / t:>12.2f}{t:>10.3f}")
    if "workbench_first_render_s" in results:
        print(f"(first Workbench render of the process, context set-up included: "
              f"{results['workbench_first_render_s']:.2f} s)")

    # ---------------- mesh evaluation, voxelisation, features ----------------
    vox_assets = a.voxel_asset or [str(DEFAULT_ASSETS / n) for n in ("Fox.glb", "Quaternius_Frog.glb",
                                                                      "RobotExpressive.glb")]
    print(f"\n{'asset':<26}{'verts':>7}{'tris':>7}{'eval ms/frame':>15}{'vox ms/frame':>14}{'voxels':>8}")
    results["voxelize"] = {}
    feat_case = None
    for path in vox_assets:
        if not Path(path).exists():
            print(f"{Path(path).name:<26} missing")
            continue
        clip, frames, visible = load(path)
        ev, vx, nv = [], [], []
        for f in frames[:4]:
            t0 = time.perf_counter()
            B.set_frame(float(f))
            v, fc = B.evaluate_meshes(visible)
            ev.append(time.perf_counter() - t0)
            vt, ft = torch.from_numpy(v.astype(np.float32)), torch.from_numpy(fc)
            t0 = time.perf_counter()
            vox = voxelize_mesh(vt, ft, a.resolution)
            vx.append(time.perf_counter() - t0)
            nv.append(int(vox.shape[0]))
        feat_case = vox if feat_case is None else feat_case
        r = {"vertices": int(v.shape[0]), "triangles": int(fc.shape[0]), "eval_ms": 1e3 * _median(ev),
             "voxelize_ms": 1e3 * _median(vx), "voxels": int(_median(nv))}
        results["voxelize"][Path(path).name] = r
        print(f"{Path(path).name:<26}{r['vertices']:>7}{r['triangles']:>7}{r['eval_ms']:>15.1f}"
              f"{r['voxelize_ms']:>14.1f}{r['voxels']:>8}")

    if feat_case is not None:
        print(f"\n{'features (color encoder)':<34}{'voxels':>8}{'s/frame':>10}")
        results["features"] = {}
        cases = [(a.views, a.feature_size)] + ([] if a.no_trellis_features else [(150, 512)])
        for V, S in cases:
            g = torch.Generator().manual_seed(0)
            imgs = (torch.rand(V, 4, S, S, generator=g) * 255).to(torch.uint8)
            cams = hammersley_cameras(V, width=S, seed=0)
            ts = []
            for _ in range(2):
                t0 = time.perf_counter()
                voxel_features(feat_case, a.resolution, imgs, cams, "color")
                ts.append(time.perf_counter() - t0)
            t = min(ts)
            results["features"][f"{V}x{S}"] = {"s_per_frame": t, "voxels": int(feat_case.shape[0])}
            print(f"{f'{V} views x {S}^2':<34}{int(feat_case.shape[0]):>8}{t:>10.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
