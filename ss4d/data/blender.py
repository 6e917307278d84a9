"""Blender side of ``ss4d data render``: runs inside a Python process that imports ``bpy`` (Blender as a module,
``pip install ss4d[data]``).

What it does for one asset (see :func:`render_asset`):

1. fresh empty scene, import the file (glTF/GLB, FBX, OBJ, PLY, STL, USD, Alembic), render-time modifier
   settings copied to the viewport so that the exported mesh is the rendered mesh;
2. list its animation clips: every action that drives something (Blender >= 4.4 slotted actions: each slot is
   bound to the object / shape-key block it animates); an asset without animation is one ``static`` clip;
3. per clip: reset every object / bone / shape key to its imported rest state, bind the clip's action slots (all
   NLA tracks muted), evaluate the depsgraph over the whole frame range and normalise the **union of the
   per-frame world bounds** of all render-visible mesh geometry into one canonical box (longest side 1, centred
   at the origin, z-up) - one transform for the whole clip, applied as a parent empty above the asset's roots;
4. sample ``T`` frames uniformly over the clip's frame range (fractional frames use Blender sub-frames); per frame
   export the evaluated (skinned / morphed) triangle mesh in canonical coordinates and render ``V`` Hammersley
   views (radius 2, fov 40 deg, random offset) plus ``K`` monocular input camera paths as RGBA PNGs with a
   transparent film and the TRELLIS lights; every camera is read back from Blender (``matrix_world``) and stored
   as :class:`ss4d.render.camera.Camera` (OpenCV extrinsics, normalised intrinsics).

Nothing here imports ``bpy`` at module import time: :func:`have_bpy` / :func:`require_bpy` check for it, so the
package (and the driver :mod:`ss4d.data.render_assets`) imports fine without Blender.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import struct
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "BPY_MISSING_MESSAGE",
    "BpyMissingError",
    "AssetError",
    "SUPPORTED_EXTENSIONS",
    "DEFAULT_MAX_VERTICES",
    "have_bpy",
    "require_bpy",
    "check_asset_file",
    "check_vertex_budget",
    "sample_frames",
    "normalization_from_bounds",
    "opencv_to_blender_c2w",
    "ClipInfo",
    "RenderSettings",
    "RenderedClip",
    "reset_scene",
    "import_asset",
    "list_clips",
    "activate_clip",
    "evaluate_meshes",
    "render_asset",
]

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


# ================================================================================================================
# pure helpers (no bpy): file checks, frame sampling, normalisation, camera conversion
# ================================================================================================================
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


# ================================================================================================================
# settings / results
# ================================================================================================================
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


# ================================================================================================================
# bpy: scene, import, clips
# ================================================================================================================
def reset_scene():
    bpy = require_bpy()
    with _capture_stderr():  # "Unable to initialise audio" on machines without a sound device
        bpy.ops.wm.read_factory_settings(use_empty=True)


def _run_importer(kind: str, path: str):
    bpy = require_bpy()
    if kind == "gltf":
        return bpy.ops.import_scene.gltf(filepath=path)
    if kind == "fbx":
        return bpy.ops.import_scene.fbx(filepath=path)
    if kind == "obj":
        return bpy.ops.wm.obj_import(filepath=path, forward_axis="NEGATIVE_Z", up_axis="Y")
    if kind == "ply":
        return bpy.ops.wm.ply_import(filepath=path)
    if kind == "stl":
        return bpy.ops.wm.stl_import(filepath=path)
    if kind == "usd":
        return bpy.ops.wm.usd_import(filepath=path)
    if kind == "abc":
        return bpy.ops.wm.alembic_import(filepath=path, as_background_job=False)
    raise AssetError("not_3d", f"no importer for {kind}")


def import_asset(path) -> list:
    """Import ``path`` into the (fresh) scene; returns the imported objects. Raises :class:`AssetError`."""
    bpy = require_bpy()
    kind = check_asset_file(path)
    before = set(bpy.data.objects)
    try:
        res = _run_importer(kind, str(Path(path).resolve()))
    except AssetError:
        raise
    except Exception as e:  # noqa: BLE001 - importers raise RuntimeError with Blender's report text
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith("Location:")]
        raise AssetError("import_failed", f"{Path(path).name}: Blender could not import it "
                                          f"({lines[-1] if lines else type(e).__name__})") from None
    if "FINISHED" not in res:
        raise AssetError("import_failed", f"{Path(path).name}: the importer returned {sorted(res)}")
    objs = [o for o in bpy.data.objects if o not in before]
    if not any(o.type in GEOMETRY_TYPES for o in objs):
        raise AssetError("no_geometry", f"{Path(path).name}: no mesh geometry after import")
    # render-time modifier settings everywhere, so the viewport depsgraph we export equals the rendered mesh
    for o in objs:
        for m in getattr(o, "modifiers", []):
            m.show_viewport = m.show_render
            if hasattr(m, "render_levels") and hasattr(m, "levels"):
                m.levels = m.render_levels
    return objs


def _animatable_ids():
    bpy = require_bpy()
    for name in ("objects", "shape_keys", "meshes", "materials", "armatures", "cameras", "lights", "node_groups",
                 "worlds", "curves", "textures"):
        for idb in getattr(bpy.data, name, []):
            ad = getattr(idb, "animation_data", None)
            if ad is not None:
                yield idb, ad


def _id_type_code(idb) -> str:
    return type(idb).__name__.upper()


_SLOT_TYPES = {"OBJECT": ("Object",), "KEY": ("Key",), "MESH": ("Mesh",), "MATERIAL": ("Material",),
               "ARMATURE": ("Armature",), "CAMERA": ("Camera",), "LIGHT": ("Light", "PointLight", "SunLight",
                                                                           "SpotLight", "AreaLight"),
               "NODETREE": ("ShaderNodeTree", "GeometryNodeTree", "NodeTree"), "WORLD": ("World",)}


def _slot_matches_type(slot, idb) -> bool:
    t = getattr(slot, "target_id_type", "UNSPECIFIED")
    if t in ("UNSPECIFIED", None, ""):
        return True
    names = _SLOT_TYPES.get(t)
    return type(idb).__name__ in names if names else True


def _action_has_curves(action) -> bool:
    try:
        if len(getattr(action, "fcurves", ())) > 0:
            return True
    except (AttributeError, RuntimeError):
        pass
    for layer in getattr(action, "layers", ()):
        for strip in getattr(layer, "strips", ()):
            for bag in getattr(strip, "channelbags", ()):
                if len(bag.fcurves) > 0:
                    return True
    return False


def list_clips(static_name: str = "static") -> list[ClipInfo]:
    """Animation clips of the current scene: one per action that animates something, bound to the IDs its slots
    were made for (found through the active action / NLA strips, then by slot name). Without any: one static
    clip at the current frame."""
    bpy = require_bpy()
    ids = list(_animatable_ids())
    users: dict = {}  # action name -> [(ID, slot)]
    for idb, ad in ids:
        refs = []
        if ad.action is not None:
            refs.append((ad.action, getattr(ad, "action_slot", None)))
        for tr in ad.nla_tracks:
            for st in tr.strips:
                if st.action is not None:
                    refs.append((st.action, getattr(st, "action_slot", None)))
        for act, slot in refs:
            lst = users.setdefault(act.name, [])
            if not any(i is idb and (s == slot) for i, s in lst):
                lst.append((idb, slot))
    clips = []
    for act in sorted(bpy.data.actions, key=lambda a: a.name):
        if not _action_has_curves(act):
            continue
        bindings = []
        slots = list(getattr(act, "slots", []))
        known = users.get(act.name, [])
        if slots:
            for slot in slots:
                cands = [i for i, s in known if s is not None and s.identifier == slot.identifier]
                if not cands:
                    disp = getattr(slot, "name_display", None) or slot.identifier[2:]
                    cands = [i for i, _ in ids if i.name == disp and _slot_matches_type(slot, i)]
                if not cands and len(slots) == 1:
                    cands = [i for i, _ in known] or [i for i, _ in ids if _slot_matches_type(slot, i)][:1]
                bindings.extend((i, slot) for i in cands)
        else:  # legacy (pre-slot) actions
            bindings = [(i, None) for i, _ in known]
        if not bindings:
            continue
        fr = tuple(float(x) for x in act.frame_range)
        clips.append(ClipInfo(act.name, len(clips), fr[0], fr[1], act, bindings, False))
    if not clips:
        f = float(bpy.context.scene.frame_current)
        clips.append(ClipInfo(static_name, 0, f, f, None, [], True))
    return clips


class RestState:
    """Snapshot of the imported transforms / pose / shape-key values, restored before each clip (an action that
    does not key a channel must not inherit the previous clip's last pose)."""

    def __init__(self):
        bpy = require_bpy()
        self.objects = [(o, o.matrix_basis.copy()) for o in bpy.data.objects]
        self.bones = []
        for o in bpy.data.objects:
            if o.type == "ARMATURE" and o.pose is not None:
                for pb in o.pose.bones:
                    self.bones.append((pb, pb.location.copy(), pb.rotation_quaternion.copy(),
                                       pb.rotation_euler.copy(), tuple(pb.rotation_axis_angle), pb.scale.copy()))
        self.keys = [(kb, kb.value) for k in bpy.data.shape_keys for kb in k.key_blocks]

    def restore(self):
        for o, m in self.objects:
            o.matrix_basis = m
        for pb, loc, q, e, aa, s in self.bones:
            pb.location, pb.rotation_quaternion, pb.rotation_euler = loc, q, e
            pb.rotation_axis_angle, pb.scale = aa, s
        for kb, v in self.keys:
            kb.value = v


def activate_clip(clip: ClipInfo, rest: RestState | None = None) -> None:
    """Make ``clip`` the only animation playing: every ID's action cleared and NLA muted, the rest state
    restored, then the clip's action slots bound to their IDs."""
    for _idb, ad in _animatable_ids():
        for tr in ad.nla_tracks:
            tr.mute = True
        if ad.action is not None:
            ad.action = None
    if rest is not None:
        rest.restore()
    for idb, slot in clip.bindings:
        ad = idb.animation_data or idb.animation_data_create()
        ad.action = clip.action
        if slot is not None and hasattr(ad, "action_slot"):
            ad.action_slot = slot
        ad.action_influence = 1.0
        ad.action_blend_type = "REPLACE"


def set_frame(frame: float) -> None:
    bpy = require_bpy()
    f0 = math.floor(frame)
    bpy.context.scene.frame_set(int(f0), subframe=float(frame - f0))


def _render_visible_objects() -> set:
    """Names of objects the renderer will draw: in a non-excluded view-layer collection without hide_render,
    and not hidden for rendering themselves."""
    bpy = require_bpy()
    vis = set()

    def walk(lc, hidden):
        hidden = hidden or lc.exclude or lc.collection.hide_render
        if not hidden:
            for o in lc.collection.objects:
                if not o.hide_render:
                    vis.add(o.name)
        for ch in lc.children:
            walk(ch, hidden)

    walk(bpy.context.view_layer.layer_collection, False)
    return vis


def evaluate_meshes(visible: set | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The evaluated (modifiers, skinning, shape keys) world-space triangle soup of every render-visible
    geometry object and instance at the current frame: ``(vertices float64 [N,3], faces int64 [F,3])``."""
    bpy = require_bpy()
    if visible is None:
        visible = _render_visible_objects()
    dg = bpy.context.evaluated_depsgraph_get()
    verts, faces, off = [], [], 0
    for inst in dg.object_instances:
        ob = inst.object
        if ob.type not in GEOMETRY_TYPES:
            continue
        if not inst.is_instance and ob.original.name not in visible:
            continue
        if inst.is_instance and not getattr(inst, "show_self", True):
            continue
        mw = np.array(inst.matrix_world, dtype=np.float64)
        try:
            me = ob.to_mesh()
        except RuntimeError:
            continue
        if me is None:
            continue
        try:
            me.calc_loop_triangles()
            n, nt = len(me.vertices), len(me.loop_triangles)
            if n == 0 or nt == 0:
                continue
            co = np.empty(n * 3, dtype=np.float32)
            me.vertices.foreach_get("co", co)
            tri = np.empty(nt * 3, dtype=np.int64)
            me.loop_triangles.foreach_get("vertices", tri)
        finally:
            ob.to_mesh_clear()
        co = co.reshape(-1, 3).astype(np.float64)
        verts.append(co @ mw[:3, :3].T + mw[:3, 3])
        faces.append(tri.reshape(-1, 3) + off)
        off += n
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)


def scene_vertex_count(visible: set | None = None) -> int:
    """Vertices of the render-visible mesh data before modifiers (a cheap pre-check against the vertex budget;
    the evaluated meshes are checked again per frame)."""
    bpy = require_bpy()
    visible = _render_visible_objects() if visible is None else visible
    meshes = {o.data for o in bpy.data.objects if o.type == "MESH" and o.name in visible and o.data is not None}
    return int(sum(len(m.vertices) for m in meshes))


def measure_clip(clip: ClipInfo, frames: Sequence[float], visible: set, max_vertices: int | None = None,
                 max_bounds_frames: int = 256) -> tuple[np.ndarray, float, float]:
    """Evaluate the (active, world-space) clip at every integer frame of its range plus ``frames`` and return
    ``(center, scale, motion)``: the normalisation of the union of the per-frame bounds (see
    :func:`normalization_from_bounds`) and the largest vertex displacement from the first evaluated frame in
    world units (``inf`` when the topology changes). Call with the canonical root at identity."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    first, motion, seen = None, 0.0, False
    for f in bounds_frames(clip.frame_start, clip.frame_end, frames, max_bounds_frames):
        set_frame(float(f))
        v, _ = evaluate_meshes(visible)
        if v.shape[0] == 0:
            continue
        check_vertex_budget(v.shape[0], max_vertices)
        if not np.isfinite(v).all():
            raise AssetError("bad_geometry", f"non-finite vertices at frame {f}")
        if first is None:
            first = v
        elif first.shape == v.shape:
            motion = max(motion, float(np.abs(v - first).max()))
        else:
            motion = float("inf")
        lo = np.minimum(lo, v.min(0))
        hi = np.maximum(hi, v.max(0))
        seen = True
    if not seen:
        raise AssetError("no_geometry", "no visible mesh geometry in this clip")
    center, scale = normalization_from_bounds(lo, hi)
    return center, scale, motion


def _canonical_root():
    """An empty above every root object; its matrix is the clip's normalisation (identity while measuring)."""
    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    root = bpy.data.objects.get(_NORM_NAME)
    if root is None:
        root = bpy.data.objects.new(_NORM_NAME, None)
        bpy.context.scene.collection.objects.link(root)
        for o in list(bpy.data.objects):
            if o is root or o.parent is not None or o.type in ("CAMERA", "LIGHT"):
                continue
            mw = o.matrix_world.copy()
            o.parent = root
            o.matrix_parent_inverse = Matrix.Identity(4)
            o.matrix_world = mw
    root.matrix_world = Matrix.Identity(4)
    return root


def _set_normalization(root, center, scale) -> None:
    from mathutils import Matrix  # noqa: PLC0415

    s = float(scale)
    c = np.asarray(center, dtype=np.float64)
    M = np.diag([s, s, s, 1.0])
    M[:3, 3] = -s * c
    root.matrix_world = Matrix(M.tolist())


# ================================================================================================================
# bpy: render setup, cameras
# ================================================================================================================
def setup_render(settings: RenderSettings) -> None:
    bpy = require_bpy()
    sc = bpy.context.scene
    r = sc.render
    eng = settings.engine.lower()
    if eng == "cycles":
        r.engine = "CYCLES"
        cy = sc.cycles
        cy.device = "CPU"
        cy.samples = max(1, int(settings.samples))
        cy.use_adaptive_sampling = False
        cy.pixel_filter_type = "BOX"
        cy.filter_width = 1.0
        cy.diffuse_bounces = 1
        cy.glossy_bounces = 1
        cy.transparent_max_bounces = 3
        cy.transmission_bounces = 3
        cy.use_denoising = bool(settings.denoise)
        cy.seed = int(settings.seed) & 0x7FFFFFFF
    elif eng == "workbench":
        r.engine = "BLENDER_WORKBENCH"
        sh = sc.display.shading
        sh.light = "STUDIO"
        sh.color_type = "TEXTURE"
        sh.show_specular_highlight = False
        sc.display.render_aa = "8"
    else:
        raise ValueError(f"unknown engine {settings.engine!r} (cycles or workbench)")
    if settings.threads and settings.threads > 0:
        r.threads_mode = "FIXED"
        r.threads = int(settings.threads)
    else:
        r.threads_mode = "AUTO"
    r.resolution_x = r.resolution_y = int(settings.size)
    r.resolution_percentage = 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.film_transparent = True
    r.use_motion_blur = False
    im = r.image_settings
    im.file_format = "PNG"
    im.color_mode = "RGBA"
    im.color_depth = "8"
    im.compression = 15
    try:
        sc.view_settings.view_transform = settings.view_transform
        sc.view_settings.look = "None"
    except TypeError:
        pass
    sc.view_settings.exposure = 0.0
    sc.view_settings.gamma = 1.0


def setup_lights() -> None:
    """The TRELLIS lights (in canonical units): point 1000 W at (4,1,6), area 10000 W at (0,0,10) scaled 100,
    area 1000 W at (0,0,-10). Lights that came with the asset are hidden from rendering."""
    bpy = require_bpy()
    for o in bpy.data.objects:
        if o.type == "LIGHT" and not o.name.startswith("ss4d_"):
            o.hide_render = True
    for name, kind, energy, loc, scale in TRELLIS_LIGHTS:
        ld = bpy.data.lights.new("ss4d_" + name, type=kind)
        ld.energy = energy
        ob = bpy.data.objects.new("ss4d_" + name, ld)
        bpy.context.scene.collection.objects.link(ob)
        ob.location = loc
        ob.scale = scale
        ob.rotation_euler = (0.0, 0.0, 0.0)


def setup_camera():
    bpy = require_bpy()
    sc = bpy.context.scene
    cam = bpy.data.objects.get(_CAM_NAME)
    if cam is None:
        cam = bpy.data.objects.new(_CAM_NAME, bpy.data.cameras.new(_CAM_NAME))
        sc.collection.objects.link(cam)
    cam.data.type = "PERSP"
    cam.data.lens_unit = "FOV"
    cam.data.sensor_fit = "HORIZONTAL"
    cam.data.sensor_width = cam.data.sensor_height = 32.0
    cam.data.shift_x = cam.data.shift_y = 0.0
    cam.data.clip_start = 0.01
    cam.data.clip_end = 1000.0
    sc.camera = cam
    return cam


def place_camera(cam_obj, camera, size: int):
    """Put the Blender camera where ``camera`` (OpenCV, normalised intrinsics) is; returns the camera as Blender
    has it (``matrix_world`` read back and converted) so what is stored is what was rendered."""
    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    from ss4d.render.camera import camera_from_blender  # noqa: PLC0415

    fov = float(camera.fovx)
    cam_obj.data.angle = fov
    cam_obj.matrix_world = Matrix(opencv_to_blender_c2w(camera.extrinsics.double().numpy()).tolist())
    bpy.context.view_layer.update()
    c2w = np.array(cam_obj.matrix_world, dtype=np.float64)
    got = camera_from_blender(c2w, float(cam_obj.data.angle), size, size, camera.near, camera.far)
    return got


def render_still(path) -> None:
    bpy = require_bpy()
    bpy.context.scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    if not Path(path).is_file():
        raise RuntimeError(f"Blender did not write {path}")


# ================================================================================================================
# one asset
# ================================================================================================================
def _clip_rng(seed: int, clip_id: str, stream: int) -> np.random.Generator:
    import zlib  # noqa: PLC0415

    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(clip_id.encode("utf-8")), int(stream)])


def _select(clips: list[ClipInfo], settings: RenderSettings) -> list[ClipInfo]:
    import fnmatch  # noqa: PLC0415

    if settings.clips:
        clips = [c for c in clips if any(fnmatch.fnmatchcase(c.name, p) for p in settings.clips)]
    if settings.max_clips and settings.max_clips > 0:
        clips = clips[: int(settings.max_clips)]
    return clips


def render_asset(path, settings: RenderSettings, clip_ids: Callable[[list[str]], list[str]],
                 skip: set, make_folder: Callable[[str], Path],
                 on_event: Callable[[dict], None] | None = None) -> Iterator[RenderedClip]:
    """Import ``path`` and yield one :class:`RenderedClip` per clip whose id is not in ``skip``.

    ``clip_ids(names) -> ids`` names the clips; ``make_folder(id)`` returns an empty folder to fill (the caller
    finalises it after the yield). ``on_event`` receives ``{"event": "asset", ...}`` once the clips are known and
    ``{"event": "clip_error", ...}`` for a clip that fails (the other clips go on). Raises :class:`AssetError`
    when the whole asset is unusable."""
    import time  # noqa: PLC0415

    bpy = require_bpy()
    from mathutils import Matrix  # noqa: PLC0415

    from .hammersley import hammersley_cameras  # noqa: PLC0415
    from .input_cameras import input_camera_path  # noqa: PLC0415

    emit = on_event or (lambda e: None)
    reset_scene()
    import_asset(path)
    check_vertex_budget(scene_vertex_count(), settings.max_vertices)
    sc = bpy.context.scene
    fps = float(sc.render.fps) / float(sc.render.fps_base or 1.0)
    all_clips = list_clips()
    clips = _select(all_clips, settings)
    id_of = dict(zip([c.name for c in all_clips], clip_ids([c.name for c in all_clips])))  # ids over all clips
    ids = [id_of[c.name] for c in clips]
    emit({"event": "asset", "clips": [c.name for c in all_clips], "selected": [c.name for c in clips],
          "ids": ids, "static": bool(all_clips and all_clips[0].static), "fps": fps})
    if not clips:
        raise AssetError("no_clips", f"no clip matches {list(settings.clips)} (clips: {[c.name for c in all_clips]})")
    rest = RestState()
    root = _canonical_root()
    setup_render(settings)
    setup_lights()
    cam_obj = setup_camera()
    visible = _render_visible_objects()
    fov = math.radians(settings.fov_deg)
    S, C, T = int(settings.size), int(settings.cond_size), int(settings.num_frames)

    for clip, cid in zip(clips, ids):
        if cid in skip:
            continue
        folder = None
        try:
            activate_clip(clip, rest)
            root.matrix_world = Matrix.Identity(4)
            frames = sample_frames(clip.frame_start, clip.frame_end, T)
            center, scale, motion_w = measure_clip(clip, frames, visible, settings.max_vertices,
                                                   settings.max_bounds_frames)
            _set_normalization(root, center, scale)
            bpy.context.view_layer.update()
            # --- cameras ---
            if settings.per_frame_views:
                view_cams = [hammersley_cameras(settings.num_views, radius=settings.radius, fov=fov, width=S,
                                                rng=_clip_rng(settings.seed, cid, 100 + t)) for t in range(T)]
            else:
                vc = hammersley_cameras(settings.num_views, radius=settings.radius, fov=fov, width=S,
                                        rng=_clip_rng(settings.seed, cid, 1))
                view_cams = [vc] * T
            # --- pass 1: the evaluated mesh of every sampled frame (canonical now) ---
            folder = make_folder(cid)
            for sub in ["views", "meshes"] + [("cond" if k == 0 else f"cond_{k}")
                                              for k in range(int(settings.input_paths))]:
                (folder / sub).mkdir()
            nverts, nfaces, first, motion, frame_pts, bound_radius = [], [], None, 0.0, [], 0.0
            for t, f in enumerate(frames):
                set_frame(float(f))
                v, fc = evaluate_meshes(visible)
                np.savez_compressed(folder / "meshes" / f"f{t:03d}.npz", vertices=v.astype(np.float32),
                                    faces=fc.astype(np.int32), frame=np.float64(f))
                nverts.append(int(v.shape[0]))
                nfaces.append(int(fc.shape[0]))
                frame_pts.append(v[:: max(1, v.shape[0] // 50000)])
                if v.shape[0]:
                    bound_radius = max(bound_radius, float(np.linalg.norm(v, axis=1).max()))
                if first is None:
                    first = v
                elif first.shape == v.shape:
                    motion = max(motion, float(np.abs(v - first).max()))
                else:
                    motion = float("nan")
            # --- monocular input camera paths, fitted to the object over the whole clip ---
            cond_cams, cond_params = [], []
            for k in range(int(settings.input_paths)):
                cams, params = input_camera_path(T, _clip_rng(settings.seed, cid, 1000 + k), frame_pts,
                                                 fov_range_deg=settings.input_fov_deg,
                                                 elevation_range_deg=settings.input_elevation_deg,
                                                 orbit_prob=settings.input_orbit_prob, size=C)
                cond_cams.append(cams)
                cond_params.append(params)
            del frame_pts
            # --- pass 2: renders ---
            done: dict = {}
            stored_views = [[None] * settings.num_views for _ in range(T)]
            stored_cond = [[None] * T for _ in range(len(cond_cams))]
            n_renders, t_render = 0, 0.0
            for t, f in enumerate(frames):
                set_frame(float(f))
                jobs = [(folder / "views" / f"f{t:03d}_v{j:03d}.png", cam, S, ("v", t, j))
                        for j, cam in enumerate(view_cams[t])]
                jobs += [(folder / ("cond" if k == 0 else f"cond_{k}") / f"f{t:03d}.png", cond_cams[k][t], C,
                          ("c", k, t)) for k in range(len(cond_cams))]
                for out, cam, size, slot in jobs:
                    sc.render.resolution_x = sc.render.resolution_y = size
                    got = place_camera(cam_obj, cam.resized(size, size), size)
                    err = float((got.extrinsics - cam.extrinsics.float()).abs().max())
                    if err > 1e-4:
                        raise RuntimeError(f"camera placement error {err:.2e}")
                    # identical state (same frame value and camera) -> copy the earlier render
                    key = (float(f), size, np.round(got.extrinsics.double().numpy(), 6).tobytes(),
                           round(float(got.intrinsics[0, 0]), 6))
                    if key in done:
                        shutil.copyfile(done[key], out)
                    else:
                        tr = time.perf_counter()
                        render_still(out)
                        t_render += time.perf_counter() - tr
                        n_renders += 1
                        done[key] = out
                    if slot[0] == "v":
                        stored_views[slot[1]][slot[2]] = got
                    else:
                        stored_cond[slot[1]][slot[2]] = got
            clip_motion = motion_w * scale if np.isfinite(motion_w) else float("inf")
            static = bool(clip.static or clip_motion < 1e-6)
            flags = ["static"] if static else []
            if not clip.static and static:
                flags.append("no_motion")
            if not np.isfinite(clip_motion):
                flags.append("topology_changes")
            yield RenderedClip(
                name=clip.name, index=clip.index, clip_id=cid, folder=folder, frames=[float(x) for x in frames],
                frame_range=(clip.frame_start, clip.frame_end), center=[float(x) for x in center],
                scale=float(scale), bound_radius=bound_radius, views=stored_views, cond=stored_cond,
                cond_params=cond_params, num_vertices=nverts, num_faces=nfaces, motion=float(clip_motion),
                motion_sampled=float(motion),
                static=static, flags=flags, fps=fps, render_seconds=t_render, num_renders=n_renders)
        except Exception as e:  # noqa: BLE001 - one bad clip must not stop the others
            import traceback  # noqa: PLC0415

            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

            code = e.code if isinstance(e, AssetError) else "clip_failed"
            emit({"event": "clip_error", "id": cid, "clip": clip.name, "code": code,
                  "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
