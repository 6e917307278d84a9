"""The ``.ss4d`` 4D-asset container: one safetensors file.

Tensors (stored exactly as given: dtype, shape and bits are preserved)::

    frame{t}._xyz  frame{t}._features_dc  frame{t}._scaling  frame{t}._rotation  frame{t}._opacity
    frame{t}.coords      (optional) int32 [N_t, 3] occupied 64^3 voxels (x, y, z) of frame t
    input_frames         (optional) uint8 [T, H, W, C] the preprocessed input frames

String metadata (safetensors ``__metadata__``; JSON where noted)::

    format = "ss4d"            format_version = "1"         fps, frame_count
    conventions                 human-readable summary (OpenCV extrinsics, z-up world, aabb, activations, SH 0)
    gaussian_params (JSON)      {aabb, scaling_bias, opacity_bias, mininum_kernel_size, sh_degree} shared by all
                                frames, or frame_gaussian_params (JSON list) when the frames differ
    generator (JSON)            {name, version, ...}
    extra (JSON)                whatever the caller passed as ``extra_meta``
    frame_meta (JSON)           per-frame ``Gaussians.meta`` dicts, when any is non-empty and JSON-serialisable
"""
from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ss4d.gaussians import Gaussians
from ss4d.io_utils import atomic_file

__all__ = ["CONVENTIONS", "FORMAT_NAME", "FORMAT_VERSION", "RAW_KEYS", "load_4d", "read_4d_meta", "save_4d",
           "split_coords"]

FORMAT_NAME = "ss4d"
FORMAT_VERSION = "1"
RAW_KEYS = ("_xyz", "_features_dc", "_scaling", "_rotation", "_opacity")
CONVENTIONS = ("opencv extrinsics (world-to-camera, x right, y down, z forward), normalised intrinsics; "
               "z-up world; Gaussians in the aabb box (world xyz = _xyz * aabb[3:] + aabb[:3]); "
               "activations as TRELLIS (scale = sqrt(softplus(_scaling + softplus^-1(scaling_bias))^2 + "
               "mininum_kernel_size^2), opacity = sigmoid(_opacity + logit(opacity_bias)), rotation = "
               "normalize(_rotation + [1,0,0,0]) (w,x,y,z), colour = 0.5 + 0.28209479 * _features_dc); sh_degree 0; "
               "coords = int32 (x, y, z) voxels of a 64^3 grid over the aabb")


def _gaussian_params(g: Gaussians) -> dict:
    return {"aabb": [float(a) for a in g.aabb], "scaling_bias": float(g.scaling_bias),
            "opacity_bias": float(g.opacity_bias), "mininum_kernel_size": float(g.mininum_kernel_size),
            "sh_degree": 0}


def _generator_info() -> dict:
    info = {"name": "ss4d", "torch": torch.__version__}
    try:
        from importlib.metadata import version

        info["version"] = version("ss4d")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        info["version"] = "unknown"
    return info


def _as_coords(c, t: int) -> torch.Tensor:
    c = torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c)
    if c.ndim != 2 or c.shape[1] not in (3, 4):
        raise ValueError(f"coords of frame {t} must be [N,3] (x, y, z) or [N,4] (frame, x, y, z), got {tuple(c.shape)}")
    if c.shape[1] == 4:
        c = c[:, 1:]
    if c.is_floating_point():
        raise ValueError(f"coords of frame {t} must be integers")
    return c.to(torch.int32).contiguous()


def split_coords(coords, num_frames: int) -> list[torch.Tensor]:
    """A per-frame list of ``[N_t,3]`` voxels from either such a list or one ``[N,4]`` (frame, x, y, z) tensor."""
    if isinstance(coords, (torch.Tensor, np.ndarray)) and np.ndim(coords) == 2 and coords.shape[1] == 4:
        c = torch.as_tensor(coords)
        return [c[c[:, 0] == t][:, 1:].to(torch.int32).contiguous() for t in range(num_frames)]
    coords = list(coords)
    if len(coords) != num_frames:
        raise ValueError(f"{len(coords)} coordinate sets for {num_frames} frames")
    return [_as_coords(c, t) for t, c in enumerate(coords)]


def _json_or_none(obj):
    try:
        return json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError):
        return None


def save_4d(path, gaussians_list, fps: float, coords=None, extra_meta: dict | None = None, *, input_frames=None,
            overwrite: bool = True) -> Path:
    """Write a sequence of per-frame :class:`Gaussians` (and optionally their voxels and the input frames) to one
    ``.ss4d`` safetensors file, atomically. The raw tensors are stored as they are (CPU, contiguous), so
    :func:`load_4d` gives them back bit for bit."""
    path = Path(path)
    gl = list(gaussians_list)
    if not gl:
        raise ValueError("save_4d needs at least one frame")
    fps = float(fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    tensors: dict[str, torch.Tensor] = {}
    used: dict[int, list[tuple[int, int]]] = {}  # storage -> byte ranges already referenced

    def own(v: torch.Tensor) -> torch.Tensor:
        # safetensors refuses entries that overlap in memory (a frame repeated, aliased views): copy those
        v = v.detach().cpu().contiguous()
        if v.numel() == 0:
            return v
        ptr = v.untyped_storage().data_ptr()
        lo = v.storage_offset() * v.element_size()
        hi = lo + v.numel() * v.element_size()
        if any(a < hi and lo < b for a, b in used.get(ptr, [])):
            v = v.clone()
            ptr, lo, hi = v.untyped_storage().data_ptr(), 0, v.numel() * v.element_size()
        used.setdefault(ptr, []).append((lo, hi))
        return v

    for t, g in enumerate(gl):
        if not isinstance(g, Gaussians):
            raise TypeError(f"frame {t} is a {type(g).__name__}, not a Gaussians")
        for k, v in g.raw_tensors().items():
            tensors[f"frame{t}.{k}"] = own(v)
    if coords is not None:
        for t, c in enumerate(split_coords(coords, len(gl))):
            tensors[f"frame{t}.coords"] = c
    if input_frames is not None:
        fr = input_frames if isinstance(input_frames, torch.Tensor) else torch.from_numpy(np.stack(
            [np.asarray(f) for f in input_frames]) if isinstance(input_frames, (list, tuple)) else
            np.asarray(input_frames))
        if fr.dtype != torch.uint8 or fr.ndim != 4:
            raise ValueError(f"input_frames must be uint8 [T,H,W,C], got {fr.dtype} {tuple(fr.shape)}")
        tensors["input_frames"] = fr.detach().cpu().contiguous()

    params = [_gaussian_params(g) for g in gl]
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "fps": repr(fps), "frame_count": str(len(gl)),
            "conventions": CONVENTIONS, "generator": json.dumps(_generator_info())}
    if all(p == params[0] for p in params):
        meta["gaussian_params"] = json.dumps(params[0])
    else:
        meta["frame_gaussian_params"] = json.dumps(params)
    if any(g.meta for g in gl):
        fm = _json_or_none([g.meta for g in gl])
        if fm is None:
            warnings.warn("Gaussians.meta is not JSON-serialisable; not stored in the container", stacklevel=2)
        else:
            meta["frame_meta"] = fm
    if extra_meta:
        ex = _json_or_none(extra_meta)
        if ex is None:
            raise ValueError("extra_meta must be JSON-serialisable")
        meta["extra"] = ex
    with atomic_file(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _open_meta(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not an ss4d container (not a safetensors file: {e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not an ss4d container (safetensors file without format=ss4d metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unsupported ss4d container version {meta.get('format_version')!r} "
                         f"(this ss4d reads version {FORMAT_VERSION})")
    return meta


def _parse_meta(raw: dict) -> dict:
    out: dict = {"format": raw["format"], "format_version": raw["format_version"], "fps": float(raw["fps"]),
                 "frame_count": int(raw["frame_count"]), "conventions": raw.get("conventions", "")}
    for k in ("generator", "gaussian_params", "frame_gaussian_params", "frame_meta", "extra"):
        if k in raw:
            out[k] = json.loads(raw[k])
    return out


def read_4d_meta(path) -> dict:
    """The parsed metadata of a ``.ss4d`` file without reading its tensors (see :func:`load_4d`)."""
    return _parse_meta(_open_meta(Path(path)))


def load_4d(path, *, device="cpu") -> tuple[list[Gaussians], dict, list[torch.Tensor] | None]:
    """Read a ``.ss4d`` file -> ``(gaussians_list, meta, coords_list or None)``.

    ``meta`` holds ``fps`` (float), ``frame_count`` (int), ``format``, ``format_version``, ``conventions``,
    ``generator``, ``gaussian_params`` (or ``frame_gaussian_params``), ``extra`` (the ``extra_meta`` given to
    :func:`save_4d`, if any), ``frame_meta`` (if stored) and ``input_frames`` (uint8 tensor, if stored).
    Raises ``ValueError`` for a file that is not an ss4d container or is inconsistent."""
    path = Path(path)
    raw = _open_meta(path)
    meta = _parse_meta(raw)
    T = meta["frame_count"]
    params = meta.get("frame_gaussian_params") or [meta.get("gaussian_params", {})] * T
    frame_meta = meta.get("frame_meta") or [{}] * T
    if len(params) != T or len(frame_meta) != T:
        raise ValueError(f"{path}: inconsistent ss4d metadata (frame_count {T})")
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        keys = set(f.keys())

        def get(k):
            if k not in keys:
                raise ValueError(f"{path}: ss4d container is missing tensor {k!r}")
            return f.get_tensor(k)

        gl = []
        for t in range(T):
            p = params[t]
            kw = {}
            if "aabb" in p:
                kw["aabb"] = tuple(float(a) for a in p["aabb"])
            for k in ("scaling_bias", "opacity_bias", "mininum_kernel_size"):
                if k in p:
                    kw[k] = float(p[k])
            gl.append(Gaussians(*(get(f"frame{t}.{k}") for k in RAW_KEYS), **kw, meta=dict(frame_meta[t] or {})))
        has = [f"frame{t}.coords" in keys for t in range(T)]
        coords = [get(f"frame{t}.coords") for t in range(T)] if all(has) else None
        if "input_frames" in keys:
            meta["input_frames"] = f.get_tensor("input_frames")
    return gl, meta, coords
