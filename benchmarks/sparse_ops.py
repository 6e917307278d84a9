#!/usr/bin/env python3
"""Sparse engine benchmark: submanifold conv, neighbour maps and variable-length attention on CPU.

Prints ONE table. Conv data: ~20k voxels on the shells of a few random spheres in a 64^3 grid (surface-like, as
real structured latents; not uniform noise). Conv GFLOP/s count the nominal 2*N*K*Cin*Cout per forward over all
K=27 taps, missing neighbours included (x3 for forward+backward: output, input-grad and weight-grad products), so
a conv that skips missing taps can exceed the GEMM rate. The reference is a plain dense GEMM of the same FLOPs
([N, K*Cin] @ [K*Cin, Cout], same dtype), timed interleaved with the conv in the same run. Attention: one
sequence (a single varlen group) of N tokens, 8 heads x 64, FLOPs 4*Nq*Nk*H*D; sequences longer than
--attn-full-max are timed on a slice of query rows against all N keys/values and extrapolated linearly (the
cost is exactly linear in query rows), which keeps the run short while holding the full N keys resident.
Memory = extra RSS high-water over the state before the call (fresh subprocess per case, `resource`), and
for the conv the absolute process peak too.

Usage: python benchmarks/sparse_ops.py [--threads 2] [--reps 5] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Idle OpenMP workers sleep instead of spinning: on an oversubscribed shared host spinning workers of several
# processes starve each other and every parallel region costs milliseconds. `--omp-wait default` keeps the
# runtime default.
if not any(a == "default" or a == "--omp-wait=default" for a in sys.argv):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

RES, N_VOX = 64, 20000


# ----------------------------------------------------------------------------------------------------------------
# data

def sphere_shell_coords(n: int = N_VOX, res: int = RES, seed: int = 0) -> torch.Tensor:
    """~n voxels on the shells of random spheres in a res^3 grid, batch 0, sorted (b, x, y, z)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(res, dtype=torch.float32)
    grid = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1)
    occ = torch.zeros(res, res, res, dtype=torch.bool)
    while int(occ.sum()) < n:
        centre = torch.rand(3, generator=g) * res * 0.6 + res * 0.2
        radius = float(torch.rand(1, generator=g)) * res * 0.25 + 6
        occ |= ((grid - centre).norm(dim=-1) - radius).abs() < 0.9
    xyz = occ.nonzero()
    keep = torch.randperm(xyz.shape[0], generator=g)[:n].sort().values
    xyz = xyz[keep]
    return torch.cat([torch.zeros(xyz.shape[0], 1, dtype=torch.long), xyz], 1).int()


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _rss_mb() -> float:
    """RSS high-water of this process image (VmHWM; ru_maxrss would include the parent's peak before exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> float:
    """Reset the RSS high-water to the current RSS where the kernel allows it; returns the current RSS (MB)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ----------------------------------------------------------------------------------------------------------------
# measurements

def bench_neighbors(coords, reps):
    from ss4d.sparse import SparseTensor, neighbor_map
    from ss4d.sparse.conv import ConvPlan

    times, plan_times = [], []
    feats = torch.zeros(coords.shape[0], 1)
    for _ in range(reps):
        x = SparseTensor(feats, coords, check=False)
        times.append(_timed(lambda x=x: neighbor_map(x, (3, 3, 3))))
        nbr = neighbor_map(x, (3, 3, 3))
        plan_times.append(_timed(lambda nbr=nbr: ConvPlan(nbr)))
    plan = ConvPlan(neighbor_map(SparseTensor(feats, coords, check=False), (3, 3, 3)))
    return min(times), sorted(times)[len(times) // 2], min(plan_times), plan


def bench_conv(coords, cin, cout, dtype, backward, reps):
    """(conv best, conv median, gemm best, gemm rows used) in seconds, interleaved."""
    from ss4d.sparse import SparseTensor, submanifold_conv

    g = torch.Generator().manual_seed(1)
    n, k = coords.shape[0], 27
    feats = torch.randn(n, cin, generator=g).to(dtype)
    w = (torch.randn(cout, 3, 3, 3, cin, generator=g) / (k * cin) ** 0.5).requires_grad_(backward)
    b = torch.zeros(cout).requires_grad_(backward)
    gy = torch.randn(n, cout, generator=g).to(dtype)
    x = SparseTensor(feats, coords)

    def conv():
        if backward:
            xf = feats.clone().requires_grad_()
            y = submanifold_conv(x.replace(xf), w, b)
            y.feats.backward(gy)
            w.grad = b.grad = None
        else:
            with torch.no_grad():
                submanifold_conv(x, w, b)

    # dense GEMM of the same FLOPs; half-precision GEMMs without native CPU support are ~100x slower, so they
    # are timed on fewer rows (the rate is what is compared)
    slow = dtype != torch.float32 and not _native_half(dtype)
    rows = n // 16 if slow else n
    a = torch.randn(rows, k * cin, generator=g).to(dtype)
    bm = torch.randn(k * cin, cout, generator=g).to(dtype)
    gemm_calls = 3 if backward else 1

    def gemm():
        for _ in range(gemm_calls):
            torch.mm(a, bm)

    conv()
    gemm()
    tc, tg = [], []
    for _ in range(reps):
        tg.append(_timed(gemm) * n / rows)
        tc.append(_timed(conv))
    return min(tc), sorted(tc)[len(tc) // 2], min(tg), rows


def _native_half(dtype) -> bool:
    from ss4d.sparse.conv import _compute_dtype

    return _compute_dtype(torch.zeros(0, dtype=dtype)) == dtype


def bench_attention(n, dtype, q_rows, reps):
    from ss4d.sparse.attention import varlen_attention

    g = torch.Generator().manual_seed(2)
    h, d = 8, 64
    q, k, v = (torch.randn(rows, h, d, generator=g, dtype=dtype) for rows in (q_rows, n, n))
    before = _reset_peak()
    times = [_timed(lambda: varlen_attention(q, k, v, [q_rows], [n])) for _ in range(reps)]
    extra = max(0.0, _rss_mb() - before)
    return min(times), sorted(times)[len(times) // 2], extra, q.numel() * q.element_size() / 2**20


# ----------------------------------------------------------------------------------------------------------------
# child processes (fresh RSS high-water per memory case)

def child(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    if spec["kind"] == "conv_mem":
        from ss4d.sparse import SparseTensor, neighbor_map, submanifold_conv

        coords = sphere_shell_coords()
        cin = cout = spec["channels"]
        dtype = getattr(torch, spec["dtype"])
        g = torch.Generator().manual_seed(3)
        feats = torch.randn(coords.shape[0], cin, generator=g).to(dtype).requires_grad_()
        w = (torch.randn(cout, 3, 3, 3, cin, generator=g) * 0.01).requires_grad_()
        b = torch.zeros(cout, requires_grad=True)
        gy = torch.randn(coords.shape[0], cout, generator=g).to(dtype)
        x = SparseTensor(feats, coords)
        neighbor_map(x, (3, 3, 3))
        before = _reset_peak()
        y = submanifold_conv(x, w, b)
        y.feats.backward(gy)
        return {"peak_mb": _rss_mb(), "extra_mb": _rss_mb() - before}
    if spec["kind"] == "attn":
        tmin, tmed, extra, q_mb = bench_attention(spec["n"], getattr(torch, spec["dtype"]), spec["q_rows"],
                                                  spec["reps"])
        return {"tmin": tmin, "tmed": tmed, "extra_mb": extra, "peak_mb": _rss_mb()}
    raise ValueError(spec["kind"])


def run_child(spec: dict, timeout: float = 3600) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, attention up to 16k only")
    ap.add_argument("--attn-sizes", default="4096,16384,65536")
    ap.add_argument("--attn-big", type=int, default=100_000, help="one-group size of the memory check (0: skip)")
    ap.add_argument("--attn-full-max", type=int, default=4096, help="longer sequences are timed on a query slice")
    ap.add_argument("--attn-slice", type=int, default=1024)
    ap.add_argument("--omp-wait", default="passive", choices=["passive", "default"])
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(a.child))))
        return 0
    torch.set_num_threads(a.threads)
    reps = 2 if a.quick else a.reps
    sizes = [int(s) for s in a.attn_sizes.split(",") if s]
    if a.quick:
        sizes = [s for s in sizes if s <= 16384]
    load0 = os.getloadavg()[0]

    rows = []  # (op, config, dtype, mode, time, gflops, gemm_gflops, ratio, mem, note)
    coords = sphere_shell_coords()
    n = coords.shape[0]
    tmin, tmed, tplan, plan = bench_neighbors(coords, max(reps, 3))
    rows.append(("neighbour map", f"3^3, N={n}", "-", "build", f"{tmin * 1e3:.1f} / {tmed * 1e3:.1f}", "", "", "",
                 "", f"+ plan {tplan * 1e3:.1f} ms: {plan.kind}, {plan.occupancy:.0%} taps active"))
    gemm_rate, conv_rows = {}, []
    for ch in (64, 128):
        for dtype in (torch.float32, torch.bfloat16):
            for backward in (False, True):
                cmin, cmed, gmin, grows = bench_conv(coords, ch, ch, dtype, backward, reps)
                flops = 2 * n * 27 * ch * ch * (3 if backward else 1)
                # fwd and fwd+bwd time the same GEMM shape: keep the best rate seen for (channels, dtype)
                gemm_rate[ch, dtype] = max(gemm_rate.get((ch, dtype), 0.0), flops / gmin / 1e9)
                conv_rows.append((ch, dtype, backward, cmin, cmed, flops, grows))
    for ch, dtype, backward, cmin, cmed, flops, grows in conv_rows:
        rate, grate = flops / cmin / 1e9, gemm_rate[ch, dtype]
        notes = [] if grows == n else [f"GEMM rate on {grows} rows"]
        if dtype != torch.float32 and not _native_half(dtype):
            notes.append(f"conv runs fp32 GEMMs: {rate / gemm_rate[ch, torch.float32]:.2f} of fp32 GEMM rate")
        rows.append(("subm. conv", f"{ch}->{ch}, N={n}", str(dtype).replace("torch.", ""),
                     "fwd+bwd" if backward else "fwd", f"{cmin * 1e3:.1f} / {cmed * 1e3:.1f}",
                     f"{rate:.1f}", f"{grate:.1f}", f"{rate / grate:.2f}", "", "; ".join(notes)))
    for dtype in ("float32", "bfloat16"):
        r = run_child({"kind": "conv_mem", "channels": 128, "dtype": dtype, "threads": a.threads})
        mem = f"{r['peak_mb']:.0f} (+{r['extra_mb']:.0f})" if "error" not in r else r["error"]
        rows.append(("subm. conv", f"128->128, N={n}", dtype, "fwd+bwd", "", "", "", "", mem, "peak RSS of process"))
    big = [a.attn_big] if a.attn_big and not a.quick else []
    for size in sizes + big:
        for dtype in ("float32", "bfloat16"):
            q_rows = size if size <= a.attn_full_max else min(a.attn_slice, size)
            r = run_child({"kind": "attn", "n": size, "dtype": dtype, "q_rows": q_rows, "threads": a.threads,
                           "reps": 1 if size > a.attn_full_max or a.quick else 2})
            if "error" in r:
                rows.append(("attention", f"1 group, N={size}", dtype, "fwd", "", "", "", "", "", r["error"]))
                continue
            scale = size / q_rows
            flops = 4 * size * size * 8 * 64
            t = r["tmin"] * scale
            tstr = ("" if scale == 1 else "~") + (f"{t * 1e3:.0f}" if t < 10 else f"{t:.0f} s")
            note = "" if scale == 1 else f"~: extrapolated from {q_rows} query rows x all {size} keys (linear)"
            rows.append(("attention", f"1 group, N={size}, 8x64", dtype, "fwd", tstr, f"{flops / t / 1e9:.1f}", "",
                         "", f"{r['peak_mb']:.0f} (+{r['extra_mb']:.0f})", note))

    hdr = ("op", "config", "dtype", "mode", "ms best / median", "GFLOP/s", "GEMM GFLOP/s", "ratio",
           "mem MB peak (+extra)", "note")
    widths = [max(len(str(r[i])) for r in rows + [hdr]) for i in range(len(hdr))]
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16 GEMM: {_native_half(torch.bfloat16)}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'default')}, load avg {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}, {reps} reps")
    print("# conv GFLOP/s = 2*N*K*Cin*Cout (K=27, missing taps counted) per fwd, x3 for fwd+bwd, from the best time; "
          "GEMM = best rate of a dense [N, 27*Cin] @ [27*Cin, Cout] mm in the same dtype, timed interleaved with the "
          "conv; ratio = conv / GEMM rate")
    print(" | ".join(h.ljust(w) for h, w in zip(hdr, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
