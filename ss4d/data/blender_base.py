"""Blender-side basics that need no bpy: errors, the bpy check, asset and frame checks, render settings and results."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BPY_MISSING_MESSAGE = ("rendering animated assets needs Blender's Python module `bpy`, which is not installed: "
                       "install the data extra with `pip install ss4d[data]` (bpy==5.0.1, CPython 3.11)")


# extension -> importer key
SUPPORTED_EXTENSIONS = {".glb": "gltf", ".gltf": "gltf", ".fbx": "fbx", ".obj": "obj", ".ply": "ply",
                        ".stl": "stl", ".usd": "usd", ".usda": "usd", ".usdc": "usd", ".usdz": "usd",
                        ".abc": "abc"}


DEFAULT_MAX_VERTICES = 1_000_000


GEOMETRY_TYPES = ("MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME")


TRELLIS_LIGHTS = (  # (name, type, energy W, location, scale) - TRELLIS dataset_toolkits/blender_script/render.py
    ("Default_Light", "POINT", 1000.0, (4.0, 1.0, 6.0), (1.0, 1.0, 1.0)),
    ("Top_Light", "AREA", 10000.0, (0.0, 0.0, 10.0), (100.0, 100.0, 100.0)),
    ("Bottom_Light", "AREA", 1000.0, (0.0, 0.0, -10.0), (1.0, 1.0, 1.0)),
)


_NORM_NAME = "ss4d_canonical_box"


_CAM_NAME = "ss4d_camera"


class BpyMissingError(RuntimeError):
    """``bpy`` is not importable (the ``data`` extra is not installed)."""

    def __init__(self, msg: str = BPY_MISSING_MESSAGE):
        super().__init__(msg)


class AssetError(Exception):
    """An asset (or one of its clips) cannot be used. ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def have_bpy() -> bool:
    """Whether ``bpy`` can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("bpy") is not None
    except (ImportError, ValueError):
        return False


def require_bpy():
    """Import and return ``bpy`` or raise :class:`BpyMissingError` with the install hint.

    What Blender prints on stderr while it starts (e.g. its audio module's complaint about a NumPy 2 runtime,
    which is harmless for rendering) is kept out of the console: it goes to the ``ss4d.data.blender`` logger at
    DEBUG level, or into the error message if the import fails."""
    mod = sys.modules.get("bpy")
    if mod is not None:
        return mod
    captured = ""
    try:
        with _capture_stderr() as cap:
            try:
                import bpy  # noqa: PLC0415
            finally:
                captured = cap()
    except ImportError as e:
        tail = captured.strip().splitlines()[-3:]
        raise BpyMissingError(BPY_MISSING_MESSAGE + (f" (import error: {e}; {' '.join(tail)})" if tail else
                                                     f" (import error: {e})")) from e
    if captured.strip():
        logging.getLogger(__name__).debug("bpy start-up output:\n%s", captured)
    return bpy


@contextlib.contextmanager
def _capture_stderr():
    """Redirect file descriptors 1 and 2 (C and Python writes alike) into a temporary file; yields a reader.
    A no-op where the standard streams are not the real descriptors 1 / 2 (e.g. under output capture)."""
    fds = []
    for stream, want in ((sys.stdout, 1), (sys.stderr, 2)):
        try:
            if stream.fileno() == want:
                fds.append(want)
        except (AttributeError, OSError, ValueError):
            pass
    if not fds:
        yield lambda: ""
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        for fd in fds:
            os.dup2(tmp.fileno(), fd)

        def read() -> str:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            tmp.flush()
            tmp.seek(0)
            return tmp.read().decode("utf-8", "replace")
        try:
            yield read
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            for fd, old in saved.items():
                os.dup2(old, fd)
                os.close(old)


def check_asset_file(path) -> str:
    """Cheap sanity checks before handing a file to Blender; returns the importer key or raises
    :class:`AssetError` (``missing``, ``not_3d``, ``empty``, ``corrupt``)."""
    p = Path(path)
    if not p.is_file():
        raise AssetError("missing", f"{p}: no such file")
    ext = p.suffix.lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise AssetError("not_3d", f"{p.name}: not a 3D file this renderer reads (extension {ext or '(none)'}; "
                                   f"supported: {', '.join(sorted(SUPPORTED_EXTENSIONS))})")
    size = p.stat().st_size
    if size == 0:
        raise AssetError("empty", f"{p.name}: empty file")
    with open(p, "rb") as f:
        head = f.read(4096)
    if ext == ".glb":
        if len(head) < 12 or head[:4] != b"glTF":
            raise AssetError("corrupt", f"{p.name}: not a binary glTF (missing 'glTF' magic)")
        version, length = struct.unpack("<II", head[4:12])
        if version != 2:
            raise AssetError("corrupt", f"{p.name}: glTF container version {version}, only 2 is supported")
        if length > size:
            raise AssetError("corrupt", f"{p.name}: truncated GLB ({size} bytes, header says {length})")
        if len(head) < 20 or head[16:20] != b"JSON":
            raise AssetError("corrupt", f"{p.name}: GLB lacks its JSON chunk")
    elif ext == ".gltf":
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise AssetError("corrupt", f"{p.name}: not valid glTF JSON ({e})") from None
        if not isinstance(doc, dict) or "asset" not in doc:
            raise AssetError("corrupt", f"{p.name}: JSON without a glTF 'asset' block")
    elif ext == ".fbx":
        if not (head.startswith(b"Kaydara FBX Binary") or b"FBXHeaderExtension" in head or head.lstrip()[:1] == b";"):
            raise AssetError("corrupt", f"{p.name}: neither a binary nor an ASCII FBX file")
    elif ext == ".obj":
        if b"\x00" in head:
            raise AssetError("corrupt", f"{p.name}: binary data in a text OBJ file")
    return SUPPORTED_EXTENSIONS[ext]


def check_vertex_budget(num_vertices: int, max_vertices: int | None = DEFAULT_MAX_VERTICES) -> None:
    """Raise :class:`AssetError` (``too_many_vertices``) when ``num_vertices >= max_vertices`` (None/0: no cap)."""
    if max_vertices and int(num_vertices) >= int(max_vertices):
        raise AssetError("too_many_vertices", f"{int(num_vertices):,} vertices >= the limit of "
                                              f"{int(max_vertices):,} (raise --max-vertices to render it)")


def update_motion(first, motion: float, v: np.ndarray, mismatch: float) -> tuple[np.ndarray, float]:
    """``(first, motion)`` after a frame's vertices ``v``: the largest vertex displacement from the first frame so
    far, or ``mismatch`` once a frame's vertex count differs from the first's."""
    if first is None:
        return v, motion
    if first.shape == v.shape:
        return first, max(motion, float(np.abs(v - first).max()))
    return first, mismatch


def sample_frames(frame_start: float, frame_end: float, num_frames: int) -> np.ndarray:
    """``num_frames`` Blender frames uniformly over ``[frame_start, frame_end]`` (both ends included; a single frame
    is the start). Fractional values are evaluated as sub-frames."""
    T = int(num_frames)
    if T < 1:
        raise ValueError("num_frames must be >= 1")
    a, b = float(frame_start), float(frame_end)
    if T == 1 or b <= a:
        return np.full(T, a, dtype=np.float64)
    return np.linspace(a, b, T, dtype=np.float64)


def bounds_frames(frame_start: float, frame_end: float, sampled: Sequence[float], max_frames: int = 256) -> np.ndarray:
    """Frames over which the clip's bounds are taken: every integer frame of the range (at most ``max_frames``,
    then uniformly spaced) plus the sampled frames - so the normalisation does not depend on ``T`` and contains
    every exported frame."""
    a, b = float(frame_start), float(frame_end)
    ints = np.arange(math.ceil(a), math.floor(b) + 1, dtype=np.float64)
    if ints.size > max_frames:
        ints = np.linspace(a, b, max_frames)
    return np.unique(np.concatenate([ints, [a, b], np.asarray(sampled, dtype=np.float64)]))


def normalization_from_bounds(lo, hi) -> tuple[np.ndarray, float]:
    """``(center, scale)`` with ``canonical = (world - center) * scale``: the box ``[lo, hi]`` centred at the origin
    with its longest side 1 (TRELLIS ``normalize_scene``)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()) or (hi < lo).any():
        raise AssetError("bad_bounds", f"invalid bounds {lo.tolist()} .. {hi.tolist()}")
    ext = float((hi - lo).max())
    if ext <= 1e-12:
        raise AssetError("degenerate", "the geometry has zero extent")
    return (lo + hi) / 2, 1.0 / ext


def opencv_to_blender_c2w(extrinsics) -> np.ndarray:
    """OpenCV world-to-camera 4x4 -> Blender camera-to-world (camera looks down -z, y up); inverse of
    :func:`ss4d.render.camera.blender_c2w_to_opencv_extrinsics`."""
    E = np.asarray(extrinsics, dtype=np.float64).reshape(4, 4)
    return np.linalg.inv(E) @ np.diag([1.0, -1.0, -1.0, 1.0])


def safe_name(name: str, max_len: int = 80) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return (s or "clip")[:max_len]


@dataclass
class RenderSettings:
    num_frames: int = 16
    num_views: int = 24
    size: int = 256
    cond_size: int = 256
    input_paths: int = 1
    engine: str = "cycles"            # "cycles" | "workbench"
    samples: int = 32                 # Cycles samples per pixel
    denoise: bool = False             # Cycles OpenImageDenoise
    threads: int = 1                  # render threads (0: Blender's automatic choice)
    seed: int = 0
    radius: float = 2.0
    fov_deg: float = 40.0
    per_frame_views: bool = False     # a new Hammersley offset per frame (default: one per clip)
    input_fov_deg: tuple = (30.0, 50.0)
    input_elevation_deg: tuple = (-10.0, 30.0)
    input_orbit_prob: float = 0.3
    max_vertices: int = DEFAULT_MAX_VERTICES
    max_bounds_frames: int = 256
    clips: tuple = ()                 # fnmatch patterns on clip names (empty: all)
    max_clips: int = 0                # 0: all
    view_transform: str = "Standard"

    @classmethod
    def from_dict(cls, d: dict) -> RenderSettings:
        keys = cls.__dataclass_fields__.keys()
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys}
        return cls(**kw)


@dataclass
class ClipInfo:
    name: str
    index: int
    frame_start: float
    frame_end: float
    action: object = None                          # bpy.types.Action (None: static)
    bindings: list = field(default_factory=list)   # [(ID, ActionSlot or None)]
    static: bool = False


@dataclass
class RenderedClip:
    """What :func:`render_asset` hands to the writer for one clip (files already in ``folder``)."""
    name: str
    index: int
    clip_id: str
    folder: Path
    frames: list                  # Blender frame numbers (float) of the T samples
    frame_range: tuple
    center: list
    scale: float
    bound_radius: float           # largest distance of a vertex of a sampled frame from the origin (canonical)
    views: list                   # T lists of V Camera (read back from Blender)
    cond: list                    # K lists of T Camera
    cond_params: list             # K dicts (fov, elevation, yaw0, yaw_rate, radius, orbit)
    num_vertices: list            # per frame
    num_faces: list
    motion: float                 # max vertex displacement from the first frame over the whole clip (canonical
    #                               units, every integer frame; inf if the topology changes)
    motion_sampled: float         # the same over the T sampled frames only (nan if the topology changes)
    static: bool
    flags: list
    fps: float
    render_seconds: float
    num_renders: int
