"""Does the SLat VAE carry appearance? Two numbers on held-out clips (the validation split), printed as a table:

* linear probe: voxel colour (straight RGB of the clip's colour features) from the encoder's latent means, least
  squares fitted on one random half of the voxels and scored (R^2, variance explained) on the other half;
* decoding: the encoder's latents of each frame decoded to Gaussians and rendered at every stored view, PSNR inside
  the union of the rendered and the true masks (white background), at --size pixels; and inside their
  intersection (colour where both show the object, without the silhouette mismatch) and the mask IoU.

Usage: python benchmarks/slat_vae.py --encoder STEM --decoder STEM [--data datasets/val_r32] [--feature vcolor]
                                     [--frames 8] [--size 128] [--threads 2]
STEM: an official-layout checkpoint (.json + .safetensors), e.g. ss4d/assets/default_model/ckpts/slat_encoder.
"""
from __future__ import annotations

import argparse
import time

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="ss4d/assets/default_model/ckpts/slat_encoder")
    ap.add_argument("--decoder", default="ss4d/assets/default_model/ckpts/slat_decoder_gs")
    ap.add_argument("--data", default="datasets/val_r32")
    ap.add_argument("--feature", default="vcolor", help="feature set of the clips (None: the stored feats)")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (from frame 0)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from ss4d.data.dataset import ClipDataset
    from ss4d.eval.metrics import masked_psnr, union_mask
    from ss4d.models.checkpoint import load_model
    from ss4d.render.rasterizer import rasterize
    from ss4d.sparse.tensor import SparseTensor
    from ss4d.train.latents import encode_slat
    from ss4d.train.vae_trainers import voxel_targets

    enc, dec = load_model(a.encoder).float().eval(), load_model(a.decoder).float().eval()
    ds = ClipDataset(a.data, num_frames=a.frames, views_per_frame=0, windows="first", load_cond=False,
                     load_views=False, feature=None if a.feature in ("", "None") else a.feature)
    Z, Y, rows = [], [], []
    t0 = time.perf_counter()
    for i in range(len(ds)):
        s = ds[i]
        with torch.no_grad():
            z = encode_slat(enc, s["coords"], s["feats"], a.frames, a.frames)
            gs = dec(SparseTensor(z.feats, z.coords, a.frames), a.frames)
        Z.append(z.feats)
        Y.append(voxel_targets(s["feats"])[:, :3])
        full = ClipDataset(a.data, num_frames=a.frames, views_per_frame=ds.clips[0]["num_views"], windows="first",
                           view_selection="first", load_cond=False, feature=None)
        views = full[i]
        vals, inter, ious = [], [], []
        for f in range(a.frames):
            for v, cam in enumerate(views["cameras"][f]):
                cam = cam.resized(a.size, a.size)
                with torch.no_grad():
                    out = rasterize(gs[f], cam, bg=(1.0, 1.0, 1.0))
                gt = torch.nn.functional.interpolate(views["views"][f, v][None], size=(a.size, a.size),
                                                     mode="bilinear", antialias=True, align_corners=False)[0]
                gt_rgb = gt[:3] * gt[3:4] + (1 - gt[3:4])
                pa = out["alpha"].reshape(a.size, a.size)
                m = union_mask(pa, gt[3])
                vals.append(float(masked_psnr(out["color"], gt_rgb, m)))
                both = (pa > 0.5) & (gt[3] > 0.5)
                if both.any():
                    inter.append(float(masked_psnr(out["color"], gt_rgb, both)))
                ious.append(float(both.sum() / m.sum().clamp_min(1)))
        mean = lambda v: sum(v) / max(len(v), 1)  # noqa: E731
        rows.append((s["id"], int(s["coords"].shape[0]), mean(vals), mean(inter), mean(ious)))
    Z, Y = torch.cat(Z), torch.cat(Y)
    perm = torch.randperm(len(Z), generator=torch.Generator().manual_seed(0))
    h = len(Z) // 2
    A = torch.cat([Z, torch.ones(len(Z), 1)], 1).double()
    W = torch.linalg.lstsq(A[perm[:h]], Y[perm[:h]].double()).solution
    P, Yt = A[perm[h:]] @ W, Y[perm[h:]].double()
    r2 = float(1 - (P - Yt).square().sum() / (Yt - Yt.mean(0)).square().sum())
    print(f"encoder {a.encoder}\ndecoder {a.decoder}\ndata {a.data} ({len(ds)} clips, {a.frames} frames, "
          f"feature {a.feature}), {time.perf_counter() - t0:.0f} s\n")
    print("| clip | voxels | PSNR in mask union (dB) | PSNR in mask intersection (dB) | mask IoU |\n"
          "|---|---:|---:|---:|---:|")
    for cid, n, p, q, iou in rows:
        print(f"| {cid} | {n} | {p:.2f} | {q:.2f} | {iou:.3f} |")
    avg = [sum(r[k] for r in rows) / len(rows) for k in (2, 3, 4)]
    print(f"| **mean** | | **{avg[0]:.2f}** | **{avg[1]:.2f}** | **{avg[2]:.3f}** |\n")
    print(f"linear probe R^2 (voxel RGB from latent means, held-out half of {len(Z)} voxels): {r2:.4f}; "
          f"latent std per channel {Z.std(0).mean():.4f}")


if __name__ == "__main__":
    main()
