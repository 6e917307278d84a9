"""Training loop: JSON config -> models, data, trainer; progress bar, metrics JSONL, checkpoints, resume,
data parallelism over `torch.distributed` (gloo on CPU, nccl on GPU) and an FSDP option.

Entry points: `train(config)` (a dict or a JSON path) and `python -m ss4d.train CONFIG` /
`torchrun --nproc_per_node N -m ss4d.train CONFIG`. The config format is documented in `docs/training.md`.
"""
from __future__ import annotations

import importlib
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..data.batching import DataError, normalize_clip
from ..data.batching import collate_clips as collate
from ..models.checkpoint import atomic_write
from . import checkpoints as ck
from .config import DEFAULTS, ROLE_KEYS, load_config
from .setup import _setup_distributed, build_role, wrap_fsdp
from .sources import FolderClips, SeededSampler, SyntheticClips, build_dataset, save_clip
from .trainers import EXPORT_NAMES, TRAINERS, ConfigError, encode_slat, slat_normalization_stats

__all__ = ["DataError", "DEFAULTS", "load_config", "train", "collate", "SyntheticClips", "FolderClips",
           "SeededSampler", "build_dataset", "save_clip", "wrap_fsdp", "build_role", "normalize_clip", "ConfigError",
           "ROLE_KEYS"]


def _spec_fingerprint(cfg, specs, fsdp: bool) -> dict:
    return {"stage": cfg["stage"], "models": specs, "batch_size": cfg["batch_size"], "seed": cfg["seed"],
            "ema_rate": cfg["ema_rate"], "fsdp": fsdp}


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if a == b else [f"{path}: checkpoint {a!r} vs config {b!r}"]


def _load_lpips(spec):
    if not spec:
        return None
    mod, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)()
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"lpips factory {spec!r} not found: {e}") from None


def _compute_slat_normalization(cfg, ds, frozen, device):
    enc = frozen.get("slat_encoder")
    lat = []
    for i in range(min(len(ds), 50000)):
        c = ds[i]
        if "slat" in c:
            lat.append(c["slat"])
        else:
            if enc is None:
                raise ConfigError("slat_normalization='compute' needs a slat_encoder or clips with 'slat'")
            T = c["occupancy"].shape[0] if "occupancy" in c else c["cond_frames"].shape[0]
            lat.append(encode_slat(enc.to(device), c["coords"].to(device), c["feats"].to(device), T, T).feats.cpu())
    return slat_normalization_stats(lat)


def _resolve_normalization(cfg, ds, frozen, device):
    n = cfg["slat_normalization"]
    if n is None:
        return None
    if n == "compute":
        return _compute_slat_normalization(cfg, ds, frozen, device)
    if isinstance(n, str):
        p = Path(n)
        if not p.is_file():
            raise ConfigError(f"slat_normalization file not found: {p}")
        d = json.loads(p.read_text())
        d = d.get("args", d).get("slat_normalization", d)
        return {"mean": list(d["mean"]), "std": list(d["std"])}
    if isinstance(n, dict) and "mean" in n and "std" in n:
        return {"mean": list(n["mean"]), "std": list(n["std"])}
    raise ConfigError("slat_normalization must be null, 'compute', a JSON path or {mean, std}")


def _step_of(line: str) -> float:
    """Step of a JSONL log line; a torn line (process killed mid-write) counts as after every step."""
    try:
        return float(json.loads(line).get("step", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
        return math.inf


def train(config, overrides: dict | None = None) -> dict:
    """Run (or resume) a training run. Returns {"step", "metrics", "out_dir", "checkpoint"}."""
    cfg = load_config(config, overrides)
    prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        if not cfg["num_threads"]:
            torch.set_num_threads(1)
    rank, world, device, created_pg = _setup_distributed(cfg)
    try:
        return _train(cfg, rank, world, device)
    finally:
        if created_pg and dist.is_initialized():
            dist.destroy_process_group()
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1])
        torch.backends.cudnn.benchmark = prev[2]


def _train(cfg, rank, world, device) -> dict:
    out_dir = Path(cfg["out_dir"])
    ck_dir = out_dir / "ckpts"
    seed = int(cfg["seed"])
    stage_cls = TRAINERS[cfg["stage"]]
    fsdp = bool(cfg["distributed"]["fsdp"])
    if fsdp and world < 2:
        fsdp = False
    # data first: a missing data set fails fast
    ds = build_dataset(cfg["data"])
    sampler = SeededSampler(len(ds), cfg["batch_size"], seed, rank, world)

    # models: identical on all ranks (seeded), roles in sorted order
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)
    roles = dict(cfg["models"])
    for r in stage_cls.roles:
        if r not in roles:
            default = {"flow": {"ss_flow": "sparse_structure_flow_model", "slat_flow": "slat_flow_model"},
                       "conditioner": {"ss_flow": "image_cond_model", "slat_flow": "image_cond_model"},
                       "encoder": {"ss_vae": "sparse_structure_encoder", "slat_vae": "slat_encoder",
                                   "slat_encoder": "slat_encoder"},
                       "decoder": {"ss_vae": "sparse_structure_decoder", "slat_vae": "slat_decoder_gs"},
                       "readout": {"slat_encoder": "slat_readout"}}
            roles[r] = {"tiny": default[r][cfg["stage"]]}
    known = stage_cls.roles + stage_cls.optional_roles + stage_cls.frozen_roles
    bad = sorted(set(roles) - set(known))
    if bad:
        raise ConfigError(f"stage {cfg['stage']!r} has no model role(s) {bad}; roles: {', '.join(known)}")
    models, frozen, specs, trainable = {}, {}, {}, {}
    for r in sorted(roles):
        is_frozen = r in stage_cls.frozen_roles
        m, spec = build_role(r, roles[r], frozen=is_frozen or roles[r].get("trainable") is False)
        if is_frozen:
            frozen[r] = m
        else:
            models[r] = m
            specs[r] = spec
            trainable[r] = bool(roles[r].get("trainable", True))
    kw = {}
    if cfg["stage"] == "slat_vae":
        kw["lpips"] = _load_lpips(cfg["lpips"])
    elif cfg["lpips"]:
        raise ConfigError("lpips is only used by the slat_vae stage")
    trainer = stage_cls(models, frozen, trainable, lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                        betas=cfg["betas"], eps=cfg["eps"], ema_rate=cfg["ema_rate"], grad_clip=cfg["grad_clip"],
                        precision=cfg["precision"], seed=seed, loss=cfg["loss"], device=device, fsdp=fsdp,
                        augment=cfg["augment"], **kw)
    first = ds[0]
    if cfg["stage"] == "ss_flow" and "ss_encoder" not in frozen and "ss_latents" not in first:
        raise ConfigError("stage ss_flow needs models.ss_encoder (to encode occupancy) or clips with 'ss_latents'")
    if cfg["stage"] == "slat_flow" and "slat_encoder" not in frozen and "slat" not in first:
        raise ConfigError("stage slat_flow needs models.slat_encoder (to encode feats) or clips with 'slat'")
    missing = [k for k in stage_cls.required_keys if k not in first]
    if missing:
        raise DataError(f"stage {cfg['stage']!r} needs clips with {missing}; the data set provides {sorted(first)}")
    if cfg["augment"] and cfg["stage"] not in ("ss_flow", "slat_flow"):
        raise ConfigError("augment applies to the conditioning video of the flow stages only")
    fingerprint = _spec_fingerprint(cfg, specs, fsdp)
    fingerprint["trainable"] = trainable

    # resume
    start_ckpt = None
    if cfg["resume"] == "auto":
        start_ckpt = ck.latest_checkpoint(ck_dir)
    elif cfg["resume"]:
        start_ckpt = Path(cfg["resume"])
    normalization = None
    rng_state = None
    if start_ckpt is not None:
        st = ck.load_checkpoint(start_ckpt)
        old = st.get("fingerprint") or {}
        # keys a checkpoint of an older ss4d did not record are not compared
        diffs = _diff(old, {k: v for k, v in fingerprint.items() if k in old}) if old else ["no fingerprint"]
        if diffs:
            raise ck.TrainCheckpointError(f"checkpoint {start_ckpt} does not fit this config: " + "; ".join(diffs[:6])
                                          + " (use another out_dir or resume=false)")
        try:
            trainer.load_state_dict(st["trainer"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise ck.TrainCheckpointError(f"checkpoint {start_ckpt} cannot be loaded: {e}") from None
        sampler.load_state_dict(st["data"])
        normalization = st.get("extra", {}).get("slat_normalization")
        rng_state = st.get("rng")
    if cfg["stage"] == "slat_flow":
        if normalization is None:
            normalization = _resolve_normalization(cfg, ds, frozen, device)
        trainer.set_normalization(normalization)
    extra = {"slat_normalization": normalization} if normalization is not None else {}
    if rng_state is not None:
        ck.set_rng_state(rng_state)

    is_main = rank == 0
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "config.json", lambda t: Path(t).write_text(json.dumps(cfg, indent=2)))
    metrics_path = out_dir / "metrics.jsonl"
    for log_path in (metrics_path, out_dir / "samples.jsonl"):
        if is_main and log_path.exists():  # drop lines logged after the checkpoint we resume from
            keep = [ln for ln in log_path.read_text().splitlines() if _step_of(ln) <= trainer.step]
            atomic_write(log_path, lambda t, keep=keep: Path(t).write_text("".join(k + "\n" for k in keep)))

    def save(step):
        if not (is_main or fsdp):
            return None
        state = {"trainer": trainer.state_dict(), "data": sampler.state_dict(), "rng": ck.get_rng_state(),
                 "fingerprint": fingerprint, "stage": cfg["stage"], "extra": extra, "config": cfg}
        if not is_main:
            return None
        return ck.save_checkpoint(ck_dir, step, state, keep=cfg["keep_ckpts"])

    from tqdm import tqdm
    bar = tqdm(total=cfg["steps"], initial=trainer.step, disable=not (is_main and cfg["progress"]),
               desc=cfg["stage"], mininterval=1.0, dynamic_ncols=True, file=sys.stderr)
    acc: dict[str, float] = {}
    nacc = 0
    t_last = time.perf_counter()
    last_ckpt = None
    metrics = {}
    preview_batch = None
    if cfg["sample_every"] and is_main and not fsdp:
        preview_batch = collate([ds[0]])
    while trainer.step < cfg["steps"]:
        ids, slots = sampler.next()
        batch = collate([ds[i] for i in ids])
        batch["slots"] = slots
        metrics = trainer.train_step(batch)
        step = trainer.step
        for k, v in metrics.items():
            acc[k] = acc.get(k, 0.0) + v
        nacc += 1
        bar.update(1)
        if is_main and cfg["progress"]:
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
        if cfg["log_every"] and (step % cfg["log_every"] == 0 or step == cfg["steps"]):
            now = time.perf_counter()
            rec = {"step": step, **{k: v / nacc for k, v in acc.items()}, "steps_per_s": nacc / max(now - t_last, 1e-9)}
            if is_main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if not cfg["progress"]:
                    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()),
                          flush=True)
            acc, nacc, t_last = {}, 0, now
        if preview_batch is not None and step % cfg["sample_every"] == 0:
            res = trainer.preview(preview_batch, out_dir / "samples", step)
            with open(out_dir / "samples.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **res}) + "\n")
        if (cfg["ckpt_every"] and step % cfg["ckpt_every"] == 0) or step == cfg["steps"]:
            last_ckpt = save(step)
    bar.close()
    if cfg["export"]:
        exp = trainer.export_state(raw=cfg["export"] == "raw")
        # a frozen conditioning encoder (e.g. the ImageNet EfficientNet) is part of the published model as well
        if "conditioner" in trainer.models and "conditioner" not in exp:
            exp["conditioner"] = {k: v.detach().clone() for k, v in trainer.models["conditioner"].state_dict().items()}
        if is_main:
            for r, sd in exp.items():
                stem = out_dir / "export" / "ckpts" / EXPORT_NAMES[cfg["stage"]].get(r, r)
                args = dict(specs[r]["args"])
                if args.get("weights") == "auto":  # the exported file carries the weights itself
                    args["weights"] = None
                _export(sd, specs[r]["name"], args, stem)
            if normalization is not None:
                atomic_write(out_dir / "export" / "slat_normalization.json",
                             lambda t: Path(t).write_text(json.dumps(normalization, indent=2)))
    if dist.is_initialized():
        dist.barrier()
    return {"step": trainer.step, "metrics": metrics, "out_dir": str(out_dir), "rank": rank, "world": world,
            "checkpoint": str(last_ckpt or ck.latest_checkpoint(ck_dir) or "")}


def _export(sd: dict, name: str, args: dict, stem: Path) -> None:
    """Official layout `<stem>.json` + `<stem>.safetensors` (loadable with `ss4d.models.checkpoint.load_model`)."""
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in sd.items()}
    atomic_write(Path(str(stem) + ".safetensors"), lambda t: save_file(sd, t))
    atomic_write(Path(str(stem) + ".json"), lambda t: Path(t).write_text(json.dumps({"name": name, "args": args},
                                                                                     indent=2)))
