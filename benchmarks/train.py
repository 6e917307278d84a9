"""Training throughput and peak memory of every ss4d.train stage at the tiny configuration.

    python benchmarks/train.py                      # all four stages, configs/tiny/*.json, 1 thread
    python benchmarks/train.py --stages ss_flow --steps 10 --threads 2 --json out.json

Each stage runs in its own subprocess (so peak RSS is per stage): models from `configs/tiny/<stage>.json` (frozen
latent encoders that the config loads from earlier runs are replaced by randomly initialised tiny ones), the
config's synthetic data (clips generated before timing), `--warmup` untimed steps then `--steps` timed
optimisation steps (forward, backward, clipping, AdamW, EMA). Reports steps/s, s/step, clips/s, peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("ss_vae", "slat_vae", "ss_flow", "slat_flow")
FROZEN_TINY = {"ss_encoder": "sparse_structure_encoder", "ss_decoder": "sparse_structure_decoder",
               "slat_encoder": "slat_encoder"}


def child(stage: str, steps: int, warmup: int, threads: int, batch_size: int | None) -> dict:
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT))
    from ss4d.train.loop import SyntheticClips, build_role, collate, load_config
    from ss4d.train.trainers import TRAINERS

    cfg = load_config(ROOT / "configs" / "tiny" / f"{stage}.json")
    cls = TRAINERS[stage]
    B = batch_size or cfg["batch_size"]
    torch.manual_seed(0)
    models, frozen, trainable = {}, {}, {}
    for role, spec in cfg["models"].items():
        if "checkpoint" in spec:
            spec = {"tiny": FROZEN_TINY[role]}
        m, _ = build_role(role, spec, frozen=role in cls.frozen_roles)
        if role in cls.frozen_roles:
            frozen[role] = m
        else:
            models[role] = m
            trainable[role] = spec.get("trainable", True)
    data = {k: v for k, v in cfg["data"].items() if k != "type"}
    data["num_clips"] = B
    ds = SyntheticClips(**data)
    batch = collate([ds[i] for i in range(B)])
    kw = {"normalization": None} if stage == "slat_flow" else {}
    tr = cls(models, frozen, trainable, lr=cfg["lr"], ema_rate=cfg["ema_rate"], grad_clip=cfg["grad_clip"],
             loss=cfg["loss"], augment=cfg["augment"], **kw)
    for _ in range(warmup):
        tr.train_step(batch)
    t0 = time.perf_counter()
    for _ in range(steps):
        m = tr.train_step(batch)
    dt = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n_train = sum(p.numel() for _, p in tr.params)
    return {"stage": stage, "batch_clips": B, "frames_per_clip": int(batch["num_frames"]),
            "voxels_per_batch": int(batch["coords"].shape[0]), "trainable_params": n_train,
            "steps": steps, "s_per_step": dt / steps, "steps_per_s": steps / dt, "clips_per_s": B * steps / dt,
            "peak_rss_mb": rss_kb / 1024, "last_loss": m["loss"], "threads": threads}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None, help="clips per step (default: the config's)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.steps, a.warmup, a.threads, a.batch_size)))
        return 0
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), PYTHONPATH=str(ROOT))
    for stage in a.stages.split(","):
        cmd = [sys.executable, __file__, "--child", stage, "--steps", str(a.steps), "--warmup", str(a.warmup),
               "--threads", str(a.threads)] + (["--batch-size", str(a.batch_size)] if a.batch_size else [])
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        if r.returncode:
            print(f"{stage}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{stage:10s} B={row['batch_clips']} T={row['frames_per_clip']} voxels={row['voxels_per_batch']:6d} "
              f"params={row['trainable_params'] / 1e6:6.2f}M  {row['steps_per_s']:7.3f} steps/s "
              f"({row['s_per_step']:.3f} s/step, {row['clips_per_s']:.2f} clips/s)  "
              f"peak RSS {row['peak_rss_mb']:.0f} MB",
              flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
