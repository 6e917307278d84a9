"""Training loop: JSON config -> models, data, trainer; progress bar, metrics JSONL, checkpoints, resume,
data parallelism over `torch.distributed` (gloo on CPU, nccl on GPU) and an FSDP option.

Entry points: `train(config)` (a dict or a JSON path) and `python -m ss4d.train CONFIG` /
`torchrun --nproc_per_node N -m ss4d.train CONFIG`. The config format is documented in `docs/training.md`.
"""
from __future__ import annotations

import copy
import importlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError
from ..models.checkpoint import atomic_write, load_model
from ..models.registry import build
from ..models.tiny import TINY
from ..render.camera import Camera, as_camera, orbit_camera
from . import checkpoints as ck
from .trainers import EXPORT_NAMES, TRAINERS, ConfigError, encode_slat, slat_normalization_stats

__all__ = ["DataError", "DEFAULTS", "load_config", "train", "collate", "SyntheticClips", "FolderClips",
           "SeededSampler", "build_dataset", "save_clip", "wrap_fsdp", "build_role"]


class DataError(InputError):
    """The training data set is missing, empty or malformed."""


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


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def _raycast(spheres, camera: Camera, size: int, ss: int = 2) -> torch.Tensor:
    """RGBA `[4, size, size]` of shaded spheres `(centre [3], radius, colour [3])` seen by `camera`."""
    n = size * ss
    K, E = camera.intrinsics.double(), camera.extrinsics.double()
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    vv, uu = torch.meshgrid(u, u, indexing="ij")
    d_cam = torch.stack([(uu - K[0, 2]) / K[0, 0], (vv - K[1, 2]) / K[1, 1], torch.ones_like(uu)], -1)
    R = E[:3, :3]
    d = d_cam @ R  # R^T d per pixel
    o = -(R.T @ E[:3, 3])
    best = torch.full((n, n), float("inf"), dtype=torch.float64)
    rgb = torch.zeros(n, n, 3, dtype=torch.float64)
    a = (d * d).sum(-1)
    light = torch.nn.functional.normalize(torch.tensor([0.4, -0.3, 0.9], dtype=torch.float64), dim=0)
    for c, r, col in spheres:
        c = torch.as_tensor(c, dtype=torch.float64)
        oc = o - c
        b = (d * oc).sum(-1)
        cc = oc.dot(oc) - r * r
        disc = b * b - a * cc
        t = (-b - disc.clamp_min(0).sqrt()) / a
        hit = (disc >= 0) & (t > 0) & (t < best)
        p = o + t[..., None] * d
        nrm = (p - c) / r
        view = -torch.nn.functional.normalize(d, dim=-1)
        shade = 0.35 + 0.45 * (nrm * light).sum(-1).clamp_min(0) + 0.2 * (nrm * view).sum(-1).clamp_min(0)
        val = torch.as_tensor(col, dtype=torch.float64) * shade[..., None]
        rgb = torch.where(hit[..., None], val, rgb)
        best = torch.where(hit, t, best)
    alpha = torch.isfinite(best).double()
    img = torch.cat([rgb * alpha[..., None], alpha[..., None]], -1).permute(2, 0, 1)
    img = torch.nn.functional.avg_pool2d(img[None], ss)[0]
    rgb = img[:3] / img[3:].clamp_min(1e-8)  # straight (un-premultiplied) colour, as RGBA renders
    return torch.cat([rgb.clamp(0, 1), img[3:]], 0).float()


class SyntheticClips:
    """Procedural clips of 1..`max_spheres` coloured spheres moving on straight lines (tests, smoke runs).

    Each clip: occupancy at `resolution`^3, voxel features (`feat_channels`: a fixed random sin-projection of
    colour and position), a conditioning video (`image_size`, front camera, premultiplied on black) and
    `num_views` RGBA renders per frame (`view_size`) from orbit cameras shared by the frames of a clip."""

    def __init__(self, num_clips: int = 8, num_frames: int = 2, resolution: int = 16, feat_channels: int = 32,
                 image_size: int = 64, num_views: int = 4, view_size: int = 32, max_spheres: int = 2,
                 seed: int = 0, radius=(0.15, 0.28), motion: float = 0.25):
        if num_clips <= 0:
            raise DataError("synthetic data set needs num_clips > 0")
        self.n, self.T, self.R, self.F = int(num_clips), int(num_frames), int(resolution), int(feat_channels)
        self.image_size, self.V, self.S = int(image_size), int(num_views), int(view_size)
        self.max_spheres, self.seed, self.radius, self.motion = int(max_spheres), int(seed), radius, float(motion)
        g = torch.Generator().manual_seed(12345)
        self.proj = torch.randn(7, self.F, generator=g) * 2.0
        self.cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.n

    def spheres(self, i: int):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        k = int(torch.randint(1, self.max_spheres + 1, (), generator=g))
        out = []
        for _ in range(k):
            r = float(self.radius[0] + (self.radius[1] - self.radius[0]) * torch.rand((), generator=g))
            c0 = (torch.rand(3, generator=g) - 0.5) * 0.45
            vel = torch.nn.functional.normalize(torch.randn(3, generator=g), dim=0) * self.motion
            col = 0.25 + 0.75 * torch.rand(3, generator=g)
            out.append((r, c0, vel, col))
        yaw0 = float(torch.rand((), generator=g)) * 2 * math.pi
        return out, yaw0

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        if i in self.cache:
            return self.cache[i]
        sph, yaw0 = self.spheres(i)
        T, R = self.T, self.R
        centres = (torch.arange(R, dtype=torch.float32) + 0.5) / R - 0.5
        grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1)
        occ, col_grid, frames, views = [], [], [], []
        cams = [orbit_camera(yaw0 + 2 * math.pi * v / max(self.V, 1), 0.35 * math.sin(1.7 * v + yaw0), 2.0,
                             width=self.S, height=self.S) for v in range(self.V)]
        front = orbit_camera(0.0, 0.25, 2.0, width=self.image_size, height=self.image_size)
        for t in range(T):
            s = t / max(T - 1, 1) - 0.5
            scene = [(c0 + vel * s, r, col) for r, c0, vel, col in sph]
            o = torch.zeros(R, R, R, dtype=torch.bool)
            cg = torch.zeros(R, R, R, 3)
            for c, r, col in reversed(scene):
                inside = (grid - c).norm(dim=-1) <= r
                o |= inside
                cg[inside] = col
            occ.append(o)
            col_grid.append(cg)
            img = _raycast(scene, front, self.image_size)
            frames.append(img[:3] * img[3:])
            views.append(torch.stack([_raycast(scene, cam, self.S) for cam in cams]))
        occ = torch.stack(occ)
        coords = torch.argwhere(occ).int()
        col = torch.stack(col_grid)[occ]
        pos = grid.expand(T, R, R, R, 3)[occ]
        x = torch.cat([col, pos * 2, torch.ones(col.shape[0], 1)], 1)
        feats = torch.sin(x @ self.proj)
        clip = {"cond_frames": torch.stack(frames), "occupancy": occ, "coords": coords, "feats": feats,
                "views": torch.stack(views), "cameras": [list(cams) for _ in range(T)]}
        self.cache[i] = clip
        return clip


def save_clip(path, clip: dict) -> None:
    """Write a clip dict (the per-clip batch format) as a `.pt` file readable by `FolderClips`
    (cameras are stored as dicts)."""
    c = dict(clip)
    if "cameras" in c:
        c["cameras"] = [[as_camera(cam).to_dict() for cam in frame] for frame in c["cameras"]]
    atomic_write(Path(path), lambda t: torch.save(c, t))


class FolderClips:
    """A folder of `*.pt` clip files written by `save_clip` (sorted by name)."""

    def __init__(self, path: str, num_frames: int | None = None):
        p = Path(path)
        if not p.is_dir():
            raise DataError(f"data set folder not found: {p}")
        self.files = sorted(p.glob("*.pt"))
        if not self.files:
            raise DataError(f"data set folder {p} holds no clip files (*.pt)")
        self.num_frames = num_frames

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        try:
            c = torch.load(self.files[i], map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise DataError(f"cannot read clip {self.files[i]}: {e}") from None
        if "cameras" in c:
            c["cameras"] = [[as_camera(cam) for cam in frame] for frame in c["cameras"]]
        return c


def build_dataset(spec: dict):
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "synthetic":
        import inspect
        known = set(inspect.signature(SyntheticClips).parameters)
        bad = sorted(set(spec) - known)
        if bad:
            raise ConfigError(f"unknown key(s) in data (synthetic): {', '.join(bad)}; "
                              f"known: {', '.join(sorted(known))}")
        return SyntheticClips(**spec)
    if kind == "folder":
        bad = sorted(set(spec) - {"path", "num_frames"})
        if bad or "path" not in spec:
            raise ConfigError("data (folder) takes 'path' (required) and 'num_frames'")
        return FolderClips(**spec)
    if kind == "callable":
        bad = sorted(set(spec) - {"factory", "args"})
        if bad or "factory" not in spec:
            raise ConfigError("data (callable) takes 'factory' ('module:attr', required) and 'args'")
        mod, _, attr = spec["factory"].partition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"data factory {spec['factory']!r} not found: {e}") from None
        try:
            ds = fn(**spec.get("args", {}))
        except (FileNotFoundError, NotADirectoryError) as e:
            raise DataError(f"data set not found: {e}") from None
        if len(ds) == 0:
            raise DataError(f"data set from {spec['factory']} is empty")
        return ds
    raise ConfigError(f"unknown data type {kind!r} (use synthetic, folder or callable)")


def normalize_clip(clip: dict) -> dict:
    """Accept conditioning frames as float `[T, 3, H, W]` (premultiplied) or as channels-last RGB(A) images
    (`[T, H, W, 3|4]`, uint8 or float, straight alpha, e.g. `ss4d.data.ClipDataset`): the latter are converted
    to float in [0, 1], premultiplied on black, channels first."""
    x = clip.get("cond_frames")
    if x is None or not isinstance(x, torch.Tensor) or x.dim() != 4:
        return clip
    channels_last = x.shape[-1] in (3, 4) and (x.dtype == torch.uint8 or x.shape[1] not in (3, 4))
    if not channels_last:
        return clip
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[-1] == 4:
        x = x[..., :3] * x[..., 3:]
    return {**clip, "cond_frames": x.permute(0, 3, 1, 2).contiguous()}


def collate(clips: list[dict]) -> dict:
    """Per-clip dicts -> one batch dict (frame-major, `b = clip * T + frame` in coords)."""
    if not clips:
        raise DataError("collate: no clips")
    clips = [normalize_clip(c) for c in clips]
    T = None
    for c in clips:
        for k in ("cond_frames", "occupancy", "views"):
            if k in c:
                t = c[k].shape[0]
                if T is None:
                    T = t
                elif t != T:
                    raise DataError(f"clips have different frame counts ({T} vs {t} in {k!r})")
    if T is None:
        raise DataError("a clip needs at least one of cond_frames, occupancy or views")
    out: dict = {"num_frames": T, "num_clips": len(clips)}
    keys = set(clips[0])
    for c in clips[1:]:
        if set(c) != keys:
            raise DataError(f"clips have different keys: {sorted(keys)} vs {sorted(c)}")
    for k in ("cond_frames", "occupancy", "views", "ss_latents"):
        if k in keys:
            out[k] = torch.cat([c[k] for c in clips])
    if "occupancy" in out:
        out["occupancy"] = out["occupancy"].bool()
    if "coords" in keys:
        cs = []
        for i, c in enumerate(clips):
            cc = c["coords"].int().clone()
            if cc.shape[0] and (int(cc[:, 0].min()) < 0 or int(cc[:, 0].max()) >= T):
                raise DataError(f"clip coords frame index must lie in [0, {T})")
            if cc.shape[0] > 1 and (cc[1:, 0] < cc[:-1, 0]).any():
                raise DataError("clip coords must be sorted by frame")
            cc[:, 0] += i * T
            cs.append(cc)
        out["coords"] = torch.cat(cs)
        for k in ("feats", "slat"):
            if k in keys:
                out[k] = torch.cat([c[k].float() for c in clips])
    if "cameras" in keys:
        out["cameras"] = [[as_camera(cam) for cam in frame] for c in clips for frame in c["cameras"]]
    return out


class SeededSampler:
    """DistributedSampler-like: epoch `e` visits `randperm(n, seed, e)`; every step takes the next `global_batch`
    indices (a short tail is dropped) and rank `r` of `w` keeps the contiguous slice `r*b:(r+1)*b`
    (b = global_batch / w). State = (epoch, index) -> exact resume."""

    def __init__(self, n: int, global_batch: int, seed: int = 0, rank: int = 0, world: int = 1,
                 shuffle: bool = True):
        if n < global_batch:
            raise DataError(f"the data set has {n} clips, fewer than the global batch size {global_batch}")
        if global_batch % world:
            raise ConfigError(f"batch_size {global_batch} is not divisible by the {world} processes")
        self.n, self.gb, self.seed, self.rank, self.world, self.shuffle = n, global_batch, seed, rank, world, shuffle
        self.epoch, self.index = 0, 0

    def permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def next(self) -> tuple[list[int], list[int]]:
        if self.index + self.gb > self.n:
            self.epoch, self.index = self.epoch + 1, 0
        ids = self.permutation(self.epoch)[self.index:self.index + self.gb]
        self.index += self.gb
        b = self.gb // self.world
        slots = list(range(self.rank * b, (self.rank + 1) * b))
        return [ids[s] for s in slots], slots

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.index = int(st["epoch"]), int(st["index"])


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# distributed
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------------
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
                       "encoder": {"ss_vae": "sparse_structure_encoder", "slat_vae": "slat_encoder"},
                       "decoder": {"ss_vae": "sparse_structure_decoder", "slat_vae": "slat_decoder_gs"}}
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
