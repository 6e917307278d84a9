"""Training data sources: synthetic sphere clips, folders of saved clips, the seeded distributed sampler."""
from __future__ import annotations

import importlib
import math
from pathlib import Path

import torch

from ..data.batching import DataError
from ..models.checkpoint import atomic_write
from ..render.camera import Camera, as_camera, orbit_camera
from .trainers import ConfigError


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
