"""Parameter counts and one forward time per network, tiny and official (released) configurations, fp32/bf16.

Official networks run with a small input (few frames / voxels) on CPU: the point is that they build, load and run,
and what one evaluation costs. Prints one table. Usage: python benchmarks/models.py [--threads 2] [--skip-official]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ss4d.models import build
from ss4d.models.tiny import TINY
from ss4d.sparse import SparseTensor

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "state_dict_manifests.json"
OFFICIAL = {
    "ss_flow_video_4d": "SS4D/ss_flow_video_4d",
    "slat_flow_video_4d": "SS4D/slat_flow_video_4d",
    "slat_dec_gs_4d": "SS4D/slat_dec_gs_4d",
    "ss_dec_conv3d_16l8": "SS4D/ss_dec_conv3d_16l8_fp16",
    "dinov2_vitl14_reg": "dinov2_vitl14_reg",
}


def shell_coords(T: int, res: int, radius: float, per_frame_shift: float = 0.5) -> torch.Tensor:
    """Voxels on a sphere shell moving across frames (surface-like sparsity)."""
    g = torch.stack(torch.meshgrid(*[torch.arange(res)] * 3, indexing="ij"), -1).float()
    out = []
    for f in range(T):
        c = torch.tensor([res / 2 + f * per_frame_shift, res / 2, res / 2])
        d = (g - c).norm(dim=-1)
        m = (d - radius * res).abs() < 0.75
        idx = torch.argwhere(m)
        out.append(torch.cat([torch.full((len(idx), 1), f), idx], 1))
    return torch.cat(out).int()


def make_input(key: str, model, T: int, res_hint: int):
    if key in ("sparse_structure_flow_model", "ss_flow_video_4d"):
        r = model.resolution
        return (torch.randn(T, model.in_channels, r, r, r), torch.full((T,), 500.0),
                torch.randn(T, 16, model.blocks[0].cross_attn.ctx_channels)), {"num_frames": T}
    if key in ("slat_flow_model", "slat_flow_video_4d"):
        c = shell_coords(T, model.resolution, 0.3)
        return (SparseTensor(torch.randn(len(c), model.in_channels), c), torch.full((T,), 500.0),
                torch.randn(T, 16, model.blocks[0].cross_attn.ctx_channels)), {"num_frames": T}
    if key in ("slat_decoder_gs", "slat_dec_gs_4d", "slat_encoder"):
        c = shell_coords(T, model.resolution, 0.3)
        return (SparseTensor(torch.randn(len(c), model.input_layer.in_features), c), T), {}
    if key in ("sparse_structure_decoder", "ss_dec_conv3d_16l8"):
        r = res_hint
        return (torch.randn(T, model.input_layer.in_channels, r, r, r),), {}
    if key == "sparse_structure_encoder":
        return (torch.randn(T, 1, 32, 32, 32),), {}
    if key == "image_cond_model":
        return (torch.rand(T, 3, model.image_size, model.image_size),), {}
    if key == "dinov2_vitl14_reg":
        return (torch.randn(1, 3, 224, 224),), {}
    raise KeyError(key)


def timed(model, args, kw, dtype):
    model = model.to(dtype).eval()

    def cast(a):
        if isinstance(a, SparseTensor):
            return a.replace(a.feats.to(dtype))
        if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() > 1:
            return a.to(dtype)
        return a

    args = [cast(a) for a in args]
    with torch.no_grad():
        t0 = time.perf_counter()
        model(*args, **kw)
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--frames", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for key, (name, args) in TINY.items():
        torch.manual_seed(0)
        m = build(name, args)
        inp, kw = make_input(key, m, a.frames, 8)
        rows.append(("tiny", key, sum(p.numel() for p in m.parameters()),
                     timed(m, inp, kw, torch.float32), timed(m, inp, kw, torch.bfloat16)))
    if not a.skip_official and MANIFEST.exists():
        man = json.loads(MANIFEST.read_text())["models"]
        for key, mk in OFFICIAL.items():
            e = man[mk]
            torch.manual_seed(0)
            m = build(e["class"], {k: v for k, v in e["args"].items()})
            inp, kw = make_input(key, m, 2, 4)
            rows.append(("official", key, sum(p.numel() for p in m.parameters()),
                         timed(m, inp, kw, torch.float32), timed(m, inp, kw, torch.bfloat16)))
            del m
    print(f"threads={a.threads}; tiny input: {a.frames} frames; official input: 2 frames, small grids/shells")
    print("| config | network | params | fwd fp32 (s) | fwd bf16 (s) |\n|---|---|---:|---:|---:|")
    for cfg, key, n, t32, t16 in rows:
        print(f"| {cfg} | {key} | {n:,} | {t32:.3f} | {t16:.3f} |")


if __name__ == "__main__":
    main()
