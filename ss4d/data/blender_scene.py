"""The bpy scene of one asset: import, its animation clips, evaluated meshes and the canonical box of a clip."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .blender_base import (
    _NORM_NAME,
    GEOMETRY_TYPES,
    AssetError,
    ClipInfo,
    _capture_stderr,
    bounds_frames,
    check_asset_file,
    check_vertex_budget,
    normalization_from_bounds,
    require_bpy,
    update_motion,
)


def reset_scene():
    bpy = require_bpy()
    with _capture_stderr():  # "Unable to initialise audio" on machines without a sound device
        bpy.ops.wm.read_factory_settings(use_empty=True)


def _fbx_light_compat(bpy) -> None:
    """Blender 5.0's bundled FBX importer still sets ``light.cycles.cast_shadow``, a property Cycles dropped: every
    FBX file with a light failed to import. Give Cycles' light settings a stand-in property (lights are replaced
    by the renderer's own anyway)."""
    light = bpy.data.lights.new("ss4d_probe", "POINT")
    try:
        cls = type(getattr(light, "cycles", None))
        if cls is not type(None) and not hasattr(light.cycles, "cast_shadow"):
            cls.cast_shadow = bpy.props.BoolProperty(default=True)
    finally:
        bpy.data.lights.remove(light)


def _run_importer(kind: str, path: str):
    bpy = require_bpy()
    if kind == "gltf":
        return bpy.ops.import_scene.gltf(filepath=path)
    if kind == "fbx":
        _fbx_light_compat(bpy)
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
        first, motion = update_motion(first, motion, v, float("inf"))
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
