"""Training checkpoints (atomic, keep-last-K, full resume state) and weight initialisation.

A training checkpoint `<out_dir>/ckpts/step_<step>.pt` is one `torch.save` dict written through
`ss4d.models.checkpoint.atomic_write` (temporary file in the same folder, fsync, rename), holding:
`format`, `stage`, `step`, `model_spec` (name + args of every trained model), `models` (state dicts), `ema`
(`{rate: {model: state dict}}`), `optimizer`, `scaler`, `clipper`, `rng` (python / numpy / torch CPU [/ CUDA])
and `data` (epoch, index into that epoch's seeded permutation). It is loaded with `weights_only=True`.

`official_init(model)` applies the TRELLIS initialisation, `init_from_trellis(model, state_dict)` copies every
inherited tensor of a TRELLIS-layout (3D) checkpoint into a 4D model.
"""
from __future__ import annotations

import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.checkpoint import CheckpointError, atomic_write, read_safetensors

__all__ = ["FORMAT", "TrainCheckpointError", "save_checkpoint", "load_checkpoint", "list_checkpoints",
           "latest_checkpoint", "prune_checkpoints", "get_rng_state", "set_rng_state", "official_init",
           "init_from_trellis", "NEW_4D_PREFIXES"]

FORMAT = "ss4d-train-v1"
_NAME = re.compile(r"^step_(\d+)\.pt$")


class TrainCheckpointError(CheckpointError):
    """A training checkpoint is missing, corrupt or does not fit the run that tries to resume from it."""


# ----------------------------------------------------------------------------------------------------------------
# RNG state
# ----------------------------------------------------------------------------------------------------------------
def get_rng_state() -> dict:
    """python / numpy / torch (CPU, and CUDA when available) RNG states, in a `weights_only`-loadable form."""
    py = random.getstate()
    npst = np.random.get_state()
    st = {"python": [py[0], list(py[1]), py[2]],
          "numpy": [npst[0], torch.from_numpy(npst[1].astype(np.int64)), int(npst[2]), int(npst[3]), float(npst[4])],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# ----------------------------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------------------------
def list_checkpoints(folder) -> list[tuple[int, Path]]:
    """`(step, path)` of `step_<n>.pt` files in `folder`, sorted by step (temporary files are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(folder) -> Path | None:
    ck = list_checkpoints(folder)
    return ck[-1][1] if ck else None


def prune_checkpoints(folder, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (and stale temporary files of interrupted writes)."""
    folder = Path(folder)
    if keep and keep > 0:
        for _, p in list_checkpoints(folder)[:-keep]:
            p.unlink(missing_ok=True)
    for p in folder.glob(".step_*.tmp"):
        p.unlink(missing_ok=True)


def save_checkpoint(folder, step: int, state: dict, keep: int | None = None) -> Path:
    """Atomically write `folder/step_<step>.pt` (zero-padded to 8 digits) and prune to the newest `keep`."""
    folder = Path(folder)
    path = folder / f"step_{step:08d}.pt"
    state = {"format": FORMAT, "step": int(step), **state}
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    if keep:
        prune_checkpoints(folder, keep)
    return path


def load_checkpoint(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise TrainCheckpointError(f"training checkpoint not found: {p}")
    try:
        st = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt / foreign file
        raise TrainCheckpointError(f"cannot read training checkpoint {p}: {type(e).__name__}: {e}") from None
    if not isinstance(st, dict) or st.get("format") != FORMAT:
        raise TrainCheckpointError(f"{p} is not an ss4d training checkpoint (format {FORMAT!r} expected)")
    return st


# ----------------------------------------------------------------------------------------------------------------
# initialisation
# ----------------------------------------------------------------------------------------------------------------
def _zero(m: nn.Module | None) -> None:
    if m is None:
        return
    for p in m.parameters(recurse=True):
        nn.init.zeros_(p)


@torch.no_grad()
def official_init(model: nn.Module) -> nn.Module:
    """The TRELLIS `initialize_weights` of the flow transformers and the SLat VAE:

    * every `nn.Linear`: xavier-uniform weight, zero bias (sparse convs keep their spconv-style init);
    * `t_embedder.mlp.{0,2}.weight ~ N(0, 0.02)`;
    * zero: each block's `adaLN_modulation[-1]`, the model `out_layer` (flow models and the Gaussian decoder),
      every sparse / dense ResBlock's `conv2` (the SLat encoder's `out_layer` too, as TRELLIS does).
    Dense SS-VAE ResBlocks already zero `conv2` in their constructor; the image conditioner is left as built."""
    from ..models.slat_vae import SLatEncoder, SLatGaussianDecoder
    from ..models.ss_vae import ResBlock3d
    from ..nn.resblock import SparseResBlock

    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    te = getattr(model, "t_embedder", None)
    if te is not None:
        nn.init.normal_(te.mlp[0].weight, std=0.02)
        nn.init.normal_(te.mlp[2].weight, std=0.02)
    for m in model.modules():
        mod = getattr(m, "adaLN_modulation", None)
        if isinstance(mod, nn.Sequential):
            _zero(mod[-1])
        if isinstance(m, (SparseResBlock, ResBlock3d)):
            _zero(m.conv2)
    if isinstance(getattr(model, "out_layer", None), nn.Linear) and (
            hasattr(model, "t_embedder") or isinstance(model, (SLatEncoder, SLatGaussianDecoder))):
        _zero(model.out_layer)
    return model


NEW_4D_PREFIXES = ("input_blocks_t.", "out_blocks_t.")


@torch.no_grad()
def init_from_trellis(model: nn.Module, source, allow_new: tuple[str, ...] = NEW_4D_PREFIXES,
                      strict_shapes: bool = True) -> dict:
    """Copy every tensor of a TRELLIS-layout checkpoint (a state dict, or a `.safetensors` path) whose key and
    shape match `model`. Model keys absent from the source must start with one of `allow_new` (the new temporal
    blocks of the 4D latent flow keep their initialisation); any other missing key, an unexpected key or (with
    `strict_shapes`) a shape mismatch raises one `CheckpointError` listing them. Returns a report dict."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.suffix != ".safetensors" and Path(str(p) + ".safetensors").is_file():
            p = Path(str(p) + ".safetensors")
        src_name = str(p)
        sd = read_safetensors(p)
    else:
        src_name, sd = "state dict", dict(source)
    own = model.state_dict()
    copied, new, mismatched = [], [], []
    for k, v in own.items():
        if k not in sd:
            new.append(k)
            continue
        if tuple(sd[k].shape) != tuple(v.shape):
            mismatched.append(f"{k} {tuple(sd[k].shape)} vs model {tuple(v.shape)}")
            continue
        v.copy_(sd[k].to(v.dtype))
        copied.append(k)
    unexpected = sorted(set(sd) - set(own))
    bad_new = [k for k in new if not k.startswith(tuple(allow_new))]
    problems = []
    if bad_new:
        problems.append(f"model keys missing from the source: {', '.join(sorted(bad_new)[:8])}"
                        + (f" (+{len(bad_new) - 8} more)" if len(bad_new) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected source keys: {', '.join(unexpected[:8])}"
                        + (f" (+{len(unexpected) - 8} more)" if len(unexpected) > 8 else ""))
    if mismatched and strict_shapes:
        problems.append(f"shape mismatches: {'; '.join(mismatched[:8])}")
    if problems:
        raise CheckpointError(f"cannot initialise {type(model).__name__} from {src_name}: " + " | ".join(problems))
    return {"copied": copied, "kept_init": new, "shape_mismatch": mismatched}
