"""Training configuration: defaults, validation and loading of the JSON config (what a run may set)."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from ..models.tiny import TINY
from .trainers import TRAINERS, ConfigError

DEFAULTS = {
    "stage": None, "models": {}, "data": None, "out_dir": None,
    "steps": 1000, "batch_size": 4, "lr": 1e-4, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8,
    "ema_rate": 0.9999, "grad_clip": 1.0, "precision": "fp32", "seed": 0,
    "log_every": 10, "ckpt_every": 500, "keep_ckpts": 3, "sample_every": 0, "resume": "auto",
    "deterministic": False, "num_threads": None, "device": "auto",
    "distributed": {"backend": "auto", "fsdp": False},
    "loss": {}, "augment": None, "slat_normalization": None, "lpips": None,
    "progress": True, "export": True, "description": "",
}


ROLE_KEYS = ("tiny", "name", "args", "checkpoint", "init", "official_init", "trainable")


def load_config(config, overrides: dict | None = None) -> dict:
    """Read (path or dict), reject unknown keys, fill defaults, check required values."""
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            config = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError("a training config must be a JSON object")
    cfg = copy.deepcopy(config)
    for k, v in (overrides or {}).items():
        cfg[k] = v
    cfg.pop("_comment", None)
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    out = copy.deepcopy(DEFAULTS)
    out.update(cfg)
    out["distributed"] = {**DEFAULTS["distributed"], **(cfg.get("distributed") or {})}
    unknown = sorted(set(out["distributed"]) - set(DEFAULTS["distributed"]))
    if unknown:
        raise ConfigError(f"unknown key(s) in distributed: {', '.join(unknown)}; known: backend, fsdp")
    for k in ("stage", "data", "out_dir"):
        if out[k] in (None, ""):
            raise ConfigError(f"config needs {k!r}")
    if out["stage"] not in TRAINERS:
        raise ConfigError(f"unknown stage {out['stage']!r}; known: {', '.join(TRAINERS)}")
    for k in ("steps", "batch_size", "log_every", "ckpt_every", "keep_ckpts", "sample_every"):
        if not isinstance(out[k], int) or out[k] < 0 or (k in ("steps", "batch_size") and out[k] == 0):
            raise ConfigError(f"{k} must be a {'positive' if k in ('steps', 'batch_size') else 'non-negative'} "
                              f"integer, got {out[k]!r}")
    if not isinstance(out["models"], dict):
        raise ConfigError("models must map a role to a model description")
    for role, spec in out["models"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"models.{role} must be an object")
        bad = sorted(set(spec) - set(ROLE_KEYS))
        if bad:
            raise ConfigError(f"unknown key(s) in models.{role}: {', '.join(bad)}; known: {', '.join(ROLE_KEYS)}")
        if sum(k in spec for k in ("tiny", "name", "checkpoint")) != 1:
            raise ConfigError(f"models.{role} needs exactly one of 'tiny', 'name' or 'checkpoint'")
        if "tiny" in spec and spec["tiny"] not in TINY:
            raise ConfigError(f"models.{role}.tiny: unknown tiny model {spec['tiny']!r}; known: {', '.join(TINY)}")
    if not isinstance(out["data"], dict) or "type" not in out["data"]:
        raise ConfigError("data must be an object with a 'type' (synthetic, folder or callable)")
    return json.loads(json.dumps(out, default=str))  # plain JSON values (paths -> str)
