"""Benchmark the pure-PyTorch tile rasterizer (CPU by default).

    python benchmarks/rasterizer.py [--threads 2] [--runs 5] [--device cpu]

Random Gaussians inside the unit box [-0.5, 0.5]^3 with scales 0.005-0.02, camera on a radius-2 orbit with a 40 degree
field of view. Each configuration runs in a fresh subprocess so that the peak resident memory (``ru_maxrss``) can be
reported as a delta over the RSS before the first render (warm-up included).
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_scene(n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g) - 0.5
    scales = torch.rand(n, 3, generator=g) * 0.015 + 0.005
    rots = torch.randn(n, 4, generator=g)
    rots = rots / rots.norm(dim=-1, keepdim=True)
    opac = torch.rand(n, generator=g) * 0.9 + 0.1
    cols = torch.rand(n, 3, generator=g)
    return means, scales, rots, opac, cols


def run_one(n: int, res: int, mode: str, runs: int, threads: int, device: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from ss4d.render import orbit_camera, rasterize

    scene = [t.to(device) for t in make_scene(n)]
    cam = orbit_camera(0.6, 0.35, 2.0, math.radians(40), res, res)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                out = rasterize(tuple(scene), cam)
            return out
        leaves = [t.detach().requires_grad_(True) for t in scene]
        out = rasterize(tuple(leaves), cam)
        (out["color"].sum() + out["alpha"].sum()).backward()
        return out

    base = _rss_mb()  # after imports and scene creation, before any rendering
    out = step()  # warm-up
    cover = float(out["alpha"].mean())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    times.sort()
    cpu.sort()
    return {"n": n, "res": res, "mode": mode, "median_ms": 1000 * times[len(times) // 2],
            "min_ms": 1000 * times[0], "cpu_ms": 1000 * cpu[len(cpu) // 2], "peak_mb": max(0.0, peak - base),
            "coverage": cover}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="20000,100000")
    ap.add_argument("--res", default="256,512")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        n, res, mode = a.one.split(":")
        print(json.dumps(run_one(int(n), int(res), mode, a.runs, a.threads, a.device)))
        return
    import os

    load0 = os.getloadavg()[0]
    rows = []
    for n in [int(s) for s in a.sizes.split(",")]:
        for res in [int(s) for s in a.res.split(",")]:
            for mode in ("fwd", "fwd+bwd"):
                cmd = [sys.executable, __file__, "--one", f"{n}:{res}:{mode}", "--runs", str(a.runs),
                       "--threads", str(a.threads), "--device", a.device]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr, file=sys.stderr)
                    raise SystemExit(r.returncode)
                rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"rasterizer benchmark: device={a.device} threads={a.threads} runs={a.runs} (median / min, peak RSS delta); "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}")
    print(f"{'gaussians':>10} {'res':>5} {'mode':>8} {'median ms':>10} {'min ms':>8} {'CPU ms':>8} {'peak MB':>8} "
          f"{'coverage':>8}")
    for r in rows:
        print(f"{r['n']:>10} {r['res']:>5} {r['mode']:>8} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} "
              f"{r['cpu_ms']:>8.1f} {r['peak_mb']:>8.0f} {r['coverage']:>8.2f}")
    print("median/min: wall clock; CPU ms: process CPU time (all threads) of the median run; peak MB: max RSS "
          "minus the RSS before the first render")


if __name__ == "__main__":
    main()
