"""Animated ``.glb`` export: one voxel mesh per frame, switched by a STEP animation.

Layout of the glTF scene::

    scene 0 -> node 0 "ss4d_root"   (rotation -90 deg about x: the ss4d z-up world -> glTF y-up; identity with
                                      ``y_up=False``)
                 |- node 1 "frame_0000"  mesh 0
                 |- node 2 "frame_0001"  mesh 1
                 ...

Animation "frames": for every frame node one ``scale`` channel with ``interpolation: STEP`` keyed at the times
``k / fps`` (k = 0..T): the scale is ``(1,1,1)`` at ``k == t`` and ``(0,0,0)`` otherwise, and the extra key at
``T / fps`` repeats frame ``T-1`` so that every frame shows for ``1 / fps`` seconds and the clip lasts ``T / fps``.
The static scene (no animation playing) shows frame 0 only.

Meshes are the exposed faces of the occupied voxels (:func:`voxels_to_mesh`; flat normals, 4 vertices per face),
placed in the same world box as the Gaussians. Vertex colours (``COLOR_0``) are converted from display sRGB to the
linear values glTF expects (``srgb_colors=True``). The material is a white, non-metallic, fully rough PBR material
so the vertex colours show as they are under the viewer's lighting.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pygltflib as gl

from ss4d.io_utils import atomic_file
from ss4d.render.preview import (
    DEFAULT_AABB,
    gaussians_to_voxels,
    voxel_colors_from_gaussians,
    voxels_to_mesh,
    voxels_to_quads,
)

__all__ = ["gaussians_to_glb", "save_animated_glb", "srgb_to_linear", "voxels_to_mesh", "voxels_to_quads"]

_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_FLOAT = 5126
_UINT = 5125


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


class _Builder:
    def __init__(self, g: gl.GLTF2):
        self.g = g
        self.blob = bytearray()

    def _view(self, data: bytes, target: int | None) -> int:
        pad = (-len(self.blob)) % 4
        self.blob += b"\x00" * pad
        self.g.bufferViews.append(gl.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data),
                                                target=target))
        self.blob += data
        return len(self.g.bufferViews) - 1

    def accessor(self, arr: np.ndarray, kind: str, target: int | None = None, minmax: bool = False) -> int:
        if arr.dtype.kind == "f":
            arr, ctype = np.ascontiguousarray(arr, dtype="<f4"), _FLOAT
        else:
            arr, ctype = np.ascontiguousarray(arr, dtype="<u4"), _UINT
        if kind == "SCALAR":
            arr = arr.reshape(-1)
        count = arr.shape[0]
        view = self._view(arr.tobytes(), target)
        acc = gl.Accessor(bufferView=view, byteOffset=0, componentType=ctype, count=int(count), type=kind)
        if minmax:
            a2 = arr.reshape(count, -1)
            cast = float if ctype == _FLOAT else int
            acc.min = [cast(x) for x in a2.min(0)]
            acc.max = [cast(x) for x in a2.max(0)]
        self.g.accessors.append(acc)
        return len(self.g.accessors) - 1


def _as_mesh(m) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    if isinstance(m, dict):
        v, f = m["vertices"], m["faces"]
        c, n = m.get("vertex_colors", m.get("colors")), m.get("normals")
    else:
        v, f = m[0], m[1]
        c = m[2] if len(m) > 2 else None
        n = m[3] if len(m) > 3 else None
    v = np.asarray(v, np.float32).reshape(-1, 3)
    f = np.asarray(f).reshape(-1, 3)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError("mesh faces index vertices out of range")
    if c is not None:
        c = np.asarray(c)
        c = c.astype(np.float32) / 255.0 if c.dtype == np.uint8 else c.astype(np.float32)
        c = c.reshape(len(v), -1)[:, :3]
    if n is not None:
        n = np.asarray(n, np.float32).reshape(len(v), 3)
    return v, f.astype(np.uint32), c, n


def save_animated_glb(path, meshes: Sequence | None = None, fps: float = 30.0, *, voxels: Sequence | None = None,
                      colors: Sequence | None = None, resolution: int = 64, aabb=DEFAULT_AABB, y_up: bool = True,
                      srgb_colors: bool = True, overwrite: bool = True) -> Path:
    """Write an animated GLB with one mesh per frame (see the module docstring for the layout) and return the path.

    Give either ``meshes`` - a list (one per frame) of ``(vertices [V,3], faces [F,3], vertex_colors [V,3] or
    None[, normals [V,3]])`` tuples or dicts with those keys (``vertex_colors`` float in [0,1] or uint8) - or
    ``voxels`` (per-frame ``[N_t,3]`` int coords of a ``resolution`` grid) with optional per-voxel ``colors``."""
    fps = float(fps)
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if (meshes is None) == (voxels is None):
        raise ValueError("pass exactly one of meshes= or voxels=")
    if voxels is not None:
        voxels = list(voxels)
        cl = list(colors) if colors is not None else [None] * len(voxels)
        if len(cl) != len(voxels):
            raise ValueError(f"{len(cl)} colour sets for {len(voxels)} voxel frames")
        meshes = [voxels_to_mesh(v, c, resolution, aabb, return_normals=True) for v, c in zip(voxels, cl)]
    meshes = [_as_mesh(m) for m in meshes]
    T = len(meshes)
    if T == 0:
        raise ValueError("no frames to export")

    g = gl.GLTF2(asset=gl.Asset(version="2.0", generator="ss4d"))
    b = _Builder(g)
    pbr = gl.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=1.0)
    g.materials.append(gl.Material(name="vertex_colors", doubleSided=False, pbrMetallicRoughness=pbr))
    s = math.sqrt(0.5)
    root = gl.Node(name="ss4d_root", children=list(range(1, T + 1)),
                   rotation=[-s, 0.0, 0.0, s] if y_up else None)
    g.nodes.append(root)
    for t, (v, f, c, n) in enumerate(meshes):
        node = gl.Node(name=f"frame_{t:04d}", scale=[1.0, 1.0, 1.0] if t == 0 else [0.0, 0.0, 0.0])
        if len(v) and len(f):
            attrs = gl.Attributes(POSITION=b.accessor(v, "VEC3", _ARRAY_BUFFER, minmax=True))
            if n is not None:
                attrs.NORMAL = b.accessor(n, "VEC3", _ARRAY_BUFFER)
            if c is not None:
                cc = srgb_to_linear(c) if srgb_colors else np.clip(c, 0.0, 1.0)
                attrs.COLOR_0 = b.accessor(cc.astype(np.float32), "VEC3", _ARRAY_BUFFER)
            prim = gl.Primitive(attributes=attrs, indices=b.accessor(f, "SCALAR", _ELEMENT_ARRAY_BUFFER, minmax=True),
                                material=0, mode=gl.TRIANGLES)
            g.meshes.append(gl.Mesh(name=f"frame_{t:04d}", primitives=[prim]))
            node.mesh = len(g.meshes) - 1
        g.nodes.append(node)
    g.scenes.append(gl.Scene(name="ss4d", nodes=[0]))
    g.scene = 0

    if T > 1:
        times = np.arange(T + 1, dtype=np.float32) / np.float32(fps)
        t_acc = b.accessor(times, "SCALAR", minmax=True)
        anim = gl.Animation(name="frames")
        key_frame = np.minimum(np.arange(T + 1), T - 1)  # the frame shown at each key
        for t in range(T):
            vals = np.repeat((key_frame == t).astype(np.float32)[:, None], 3, axis=1)
            anim.samplers.append(gl.AnimationSampler(input=t_acc, output=b.accessor(vals, "VEC3"),
                                                     interpolation="STEP"))
            anim.channels.append(gl.AnimationChannel(sampler=t, target=gl.AnimationChannelTarget(node=t + 1,
                                                                                                  path="scale")))
        g.animations.append(anim)

    g.buffers.append(gl.Buffer(byteLength=len(b.blob)))
    g.set_binary_blob(bytes(b.blob))
    path = Path(path)
    with atomic_file(path, overwrite=overwrite) as tmp:
        g.save_binary(str(tmp))
    return path


def gaussians_to_glb(path, gaussians_list: Sequence, fps: float, coords: Sequence | None = None,
                     resolution: int = 64, **kwargs) -> Path:
    """Animated voxel GLB of a Gaussian sequence: voxels = ``coords`` (per frame ``[N_t,3]``) or, if None, the
    voxels holding Gaussian centres; colour = mean colour of each voxel's Gaussians."""
    gs = list(gaussians_list)
    if coords is None:
        coords = [gaussians_to_voxels(g, resolution) for g in gs]
    coords = list(coords)
    if len(coords) != len(gs):
        raise ValueError(f"{len(coords)} voxel sets for {len(gs)} frames")
    aabb = kwargs.pop("aabb", getattr(gs[0], "aabb", DEFAULT_AABB) if gs else DEFAULT_AABB)
    cols = [voxel_colors_from_gaussians(g, c, resolution) for g, c in zip(gs, coords)]
    return save_animated_glb(path, fps=fps, voxels=coords, colors=cols, resolution=resolution, aabb=aabb, **kwargs)
