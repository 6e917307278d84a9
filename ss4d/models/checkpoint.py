"""Load and save models in the official checkpoint layout: `<stem>.json` ({"name", "args"}) next to
`<stem>.safetensors`. Loading is strict: one error lists missing keys, unexpected keys and shape mismatches."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..io_utils import atomic_file
from .registry import build


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or does not fit the model."""


def _fmt(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with one clear error; floating tensors are cast to the parameter dtype; NaN/Inf rejected."""
    own = model.state_dict()
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in sorted(set(own) & set(sd))
              if tuple(sd[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_fmt(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_fmt(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes[:8])}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(model).__name__}: " + " | ".join(problems))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{source}: tensor(s) contain NaN or Inf: {_fmt(bad)}")
    cast = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(cast, strict=True)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint file not found: {p}")
    try:
        return load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"cannot read {p}: corrupt or not a safetensors file ({e})") from None


def read_json(p: Path, missing: str) -> dict | list:
    """A checkpoint-folder JSON file, or one CheckpointError (`missing` when absent, the parse error otherwise)."""
    if not p.is_file():
        raise CheckpointError(missing)
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{p} is not valid JSON: {e}") from None


def read_model_config(stem: str | os.PathLike) -> dict:
    p = Path(str(stem) + ".json")
    cfg = read_json(p, f"model config not found: {p}")
    if not isinstance(cfg, dict) or "name" not in cfg:
        raise CheckpointError(f"{p} must hold {{\"name\": ..., \"args\": {{...}}}}")
    return cfg


def load_model(stem: str | os.PathLike, device="cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """Build `<stem>.json`'s model, load `<stem>.safetensors` strictly, move to device/dtype, eval mode."""
    cfg = read_model_config(stem)
    try:
        model = build(cfg["name"], cfg.get("args", {}))
    except ValueError as e:
        raise CheckpointError(f"{stem}.json: {e}") from None
    load_state_dict_strict(model, read_safetensors(str(stem) + ".safetensors"), f"{stem}.safetensors")
    return model.to(device=device, dtype=dtype).eval()


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` then fsync and rename onto `path` (replacing it); see `ss4d.io_utils.atomic_file`."""
    with atomic_file(path, overwrite=True) as tmp:
        write(str(tmp))


def save_model(model: nn.Module, name: str, args: dict, stem: str | os.PathLike, dtype=None) -> None:
    """Write `<stem>.json` and `<stem>.safetensors` (optionally cast floating tensors to `dtype`)."""
    sd = {k: (v.detach().to(dtype) if dtype is not None and v.is_floating_point() else v.detach()).contiguous().cpu()
          for k, v in model.state_dict().items()}
    atomic_write(Path(str(stem) + ".safetensors"), lambda t: save_file(sd, t))
    atomic_write(Path(str(stem) + ".json"),
                 lambda t: Path(t).write_text(json.dumps({"name": name, "args": args}, indent=2)))
