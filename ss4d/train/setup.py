"""Model roles and process setup for a run: building/loading each role's model, torch.distributed and FSDP."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ..models.checkpoint import load_model
from ..models.registry import build
from ..models.tiny import TINY
from . import checkpoints as ck
from .trainers import ConfigError


def build_role(role: str, spec: dict, frozen: bool = False):
    """Model of one role from its config entry. Returns (module, {"name", "args"})."""
    if "checkpoint" in spec:
        stem = spec["checkpoint"]
        cfg = json.loads(Path(str(stem) + ".json").read_text()) if Path(str(stem) + ".json").is_file() else None
        model = load_model(stem)
        return model, {"name": cfg["name"], "args": cfg.get("args", {})}
    if "tiny" in spec:
        name, args = TINY[spec["tiny"]]
        args = {**copy.deepcopy(args), **spec.get("args", {})}
    else:
        name, args = spec["name"], dict(spec.get("args", {}))
    try:
        model = build(name, args)
    except ValueError as e:
        raise ConfigError(f"models.{role}: {e}") from None
    if spec.get("official_init", not frozen) and name != "PatchImageEncoder":
        ck.official_init(model)
    init = spec.get("init")
    if init:  # a path, or {"path": ..., "strict_shapes": false} to keep the init of tensors whose shape changed
        if isinstance(init, dict):
            if "path" not in init or set(init) - {"path", "strict_shapes"}:
                raise ConfigError(f"models.{role}.init takes a path or {{'path', 'strict_shapes'}}, got {init}")
            ck.init_from_trellis(model, init["path"], strict_shapes=bool(init.get("strict_shapes", True)))
        else:
            ck.init_from_trellis(model, init)
    return model, {"name": name, "args": args}


def wrap_fsdp(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2 (`fully_shard`): every transformer / ResBlock in `blocks`, `input_blocks(_t)`, `out_blocks(_t)`,
    then the root. Requires an initialised process group.

    Sparse models pass `SparseTensor`s between blocks, on which FSDP cannot hook its pre-backward re-gather, so
    their blocks keep the gathered parameters from forward to backward (`reshard_after_forward=False`, ZeRO-2
    memory behaviour); dense models reshard after forward (ZeRO-3)."""
    from torch.distributed.fsdp import fully_shard

    from ..models.slat_flow import SLatFlowModel
    from ..models.slat_vae import SparseTransformerBase

    sparse = isinstance(model, (SLatFlowModel, SparseTransformerBase))
    for name in ("blocks", "input_blocks", "input_blocks_t", "out_blocks_t", "out_blocks", "middle_block"):
        for blk in getattr(model, name, []) or []:
            fully_shard(blk, reshard_after_forward=not sparse)
    fully_shard(model, reshard_after_forward=not sparse)
    return model


def _setup_distributed(cfg) -> tuple[int, int, torch.device, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = cfg["device"]
    if dev == "auto":
        dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device(dev)
    created = False
    if world > 1 and not dist.is_initialized():
        backend = cfg["distributed"]["backend"]
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
        created = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, device, created
