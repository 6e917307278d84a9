"""SparseTensor: voxel features `[N, ...]` with int32 coords `[N, 4] = (b, x, y, z)`, `b = sample * T + frame`.

Rows of one batch entry are contiguous. Derived tensors (`replace`) share a per-coordinate-set cache of
neighbour maps and resampling indices by reference, so nothing leaks between unrelated tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

MAX_COORD = 1 << 15  # spatial coordinates must lie in [0, MAX_COORD)


class CoordCache(dict):
    """Cache tied to one coordinate set (neighbour maps, keys, up-sampling indices)."""


def _validate(feats: torch.Tensor, coords: torch.Tensor, batch_size: int | None) -> None:
    if not isinstance(coords, torch.Tensor):
        raise ValueError(f"SparseTensor coords must be a torch.Tensor, got {type(coords).__name__}")
    if coords.is_floating_point() or coords.dtype == torch.bool or coords.is_complex():
        raise ValueError(f"SparseTensor coords must be an integer tensor (int32), got {coords.dtype}")
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f"SparseTensor coords must have shape [N, 4] = (b, x, y, z), got {tuple(coords.shape)}")
    if not isinstance(feats, torch.Tensor) or feats.dim() < 1:
        raise ValueError("SparseTensor feats must be a tensor of shape [N, C, ...]")
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(f"SparseTensor feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
    n = coords.shape[0]
    if n == 0:
        return
    if (coords < 0).any():
        raise ValueError("SparseTensor coords must be non-negative (found a negative coordinate)")
    if (coords[:, 1:] >= MAX_COORD).any():
        raise ValueError(f"SparseTensor spatial coords must be < {MAX_COORD} (found an out-of-range coordinate)")
    b = coords[:, 0].long()
    if int(b.max()) >= MAX_COORD:
        raise ValueError(f"SparseTensor batch index must be < {MAX_COORD} (found an out-of-range batch index)")
    if batch_size is not None and int(b.max()) >= batch_size:
        raise ValueError(f"SparseTensor batch index {int(b.max())} out of range for batch_size {batch_size}")
    if n > 1:
        changes = (b[1:] != b[:-1]).sum().item()
        if changes != int(torch.unique(b).numel()) - 1:
            raise ValueError("SparseTensor rows of one batch entry must be contiguous "
                             "(use ss4d.sparse.sort_coords to reorder)")
    key = pack_keys(coords)
    if torch.unique(key).numel() != n:
        raise ValueError("SparseTensor coords contain duplicate sites (same (b, x, y, z) twice)")


def pack_keys(coords: torch.Tensor) -> torch.Tensor:
    """int64 key of (b, x, y, z); lexicographic order of keys == lexicographic order of coords."""
    c = coords.long()
    return (((c[:, 0] << 16 | c[:, 1]) << 16 | c[:, 2]) << 16) | c[:, 3]


def sort_coords(coords: torch.Tensor, *tensors: torch.Tensor):
    """Sort rows lexicographically by (b, x, y, z); returns (coords, *tensors) reordered, plus the permutation."""
    perm = torch.argsort(pack_keys(coords))
    return (coords[perm], *[t[perm] for t in tensors], perm)


class SparseTensor:
    """Sparse voxel tensor. `feats [N, ...]`, `coords int32 [N, 4]`, `batch_size` = number of batch entries
    (defaults to max(b)+1). Set `check=False` only for internally produced, already valid tensors."""

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: int | None = None,
                 check: bool = True, cache: CoordCache | None = None):
        if check:
            _validate(feats, coords, batch_size)
        if coords.dtype != torch.int32:
            coords = coords.int()
        self.feats = feats
        self.coords = coords
        if batch_size is None:
            batch_size = int(coords[:, 0].max()) + 1 if coords.shape[0] else 0
        self.batch_size = int(batch_size)
        self.cache = cache if cache is not None else CoordCache()

    # ----- shape / layout -----
    @property
    def shape(self) -> torch.Size:
        return torch.Size([self.batch_size, *self.feats.shape[1:]])

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def __len__(self) -> int:
        return self.feats.shape[0]

    @property
    def batch_counts(self) -> torch.Tensor:
        """Rows per batch entry, int64 [batch_size]."""
        if "batch_counts" not in self.cache:
            self.cache["batch_counts"] = torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size)
        return self.cache["batch_counts"]

    @property
    def layout(self) -> list[slice]:
        """Row slice of each batch entry."""
        if "layout" not in self.cache:
            offs = [0, *torch.cumsum(self.batch_counts, 0).tolist()]
            self.cache["layout"] = [slice(offs[i], offs[i + 1]) for i in range(self.batch_size)]
        return self.cache["layout"]

    @property
    def batch_index(self) -> torch.Tensor:
        """int64 batch entry of each row (cached)."""
        if "batch_index" not in self.cache:
            self.cache["batch_index"] = self.coords[:, 0].long()
        return self.cache["batch_index"]

    # ----- derivation -----
    def replace(self, feats: torch.Tensor, coords: torch.Tensor | None = None,
                batch_size: int | None = None) -> SparseTensor:
        """Same sites (shared cache) with new feats; or new coords (fresh cache)."""
        if feats.shape[0] != self.feats.shape[0] and coords is None:
            raise ValueError(f"replace: feats has {feats.shape[0]} rows, tensor has {self.feats.shape[0]}")
        if coords is None:
            return SparseTensor(feats, self.coords, self.batch_size, check=False, cache=self.cache)
        return SparseTensor(feats, coords, batch_size if batch_size is not None else None, check=False)

    def to(self, device=None, dtype=None) -> SparseTensor:
        """`.to(dtype)`, `.to(device)` or `.to(device, dtype)`; coords stay int32, the cache is shared when the
        device does not change."""
        if isinstance(device, torch.dtype):
            device, dtype = None, device
        feats = self.feats.to(device=device, dtype=dtype)
        if device is None or torch.device(device) == self.coords.device:
            return SparseTensor(feats, self.coords, self.batch_size, check=False, cache=self.cache)
        return SparseTensor(feats, self.coords.to(device), self.batch_size, check=False)

    def type(self, dtype) -> SparseTensor:
        return self.replace(self.feats.to(dtype))

    def float(self) -> SparseTensor:
        return self.type(torch.float32)

    def half(self) -> SparseTensor:
        return self.type(torch.float16)

    def detach(self) -> SparseTensor:
        return self.replace(self.feats.detach())

    def split(self) -> list[SparseTensor]:
        """One SparseTensor per batch entry (batch index reset to 0)."""
        out = []
        for sl in self.layout:
            c = self.coords[sl].clone()
            c[:, 0] = 0
            out.append(SparseTensor(self.feats[sl], c, 1, check=False))
        return out

    # ----- elementwise ops with per-entry broadcast -----
    def _other(self, other):
        if isinstance(other, SparseTensor):
            if other.feats.shape[0] != self.feats.shape[0]:
                raise ValueError("SparseTensor op: operands have different numbers of rows")
            return other.feats
        if isinstance(other, torch.Tensor) and other.dim() == self.feats.dim() and other.shape[0] == self.batch_size:
            return other[self.batch_index]
        return other

    def __add__(self, o):
        return self.replace(self.feats + self._other(o))

    __radd__ = __add__

    def __sub__(self, o):
        return self.replace(self.feats - self._other(o))

    def __rsub__(self, o):
        return self.replace(self._other(o) - self.feats)

    def __mul__(self, o):
        return self.replace(self.feats * self._other(o))

    __rmul__ = __mul__

    def __truediv__(self, o):
        return self.replace(self.feats / self._other(o))

    def __neg__(self):
        return self.replace(-self.feats)

    def __repr__(self) -> str:
        return (f"SparseTensor(rows={self.feats.shape[0]}, feats={tuple(self.feats.shape[1:])}, "
                f"batch_size={self.batch_size}, dtype={self.dtype})")


def sparse_cat(tensors: Sequence[SparseTensor], dim: int = 0) -> SparseTensor:
    """dim=0: stack batch entries (batch indices offset); dim>=1: concatenate feats of identical sites."""
    if not tensors:
        raise ValueError("sparse_cat: no tensors")
    if dim == 0:
        feats, coords, off = [], [], 0
        for t in tensors:
            c = t.coords.clone()
            c[:, 0] += off
            off += t.batch_size
            feats.append(t.feats)
            coords.append(c)
        return SparseTensor(torch.cat(feats), torch.cat(coords), off, check=False)
    base = tensors[0]
    for t in tensors[1:]:
        if t.feats.shape[0] != base.feats.shape[0]:
            raise ValueError("sparse_cat: feature concatenation needs identical sites")
    return base.replace(torch.cat([t.feats for t in tensors], dim=dim))
