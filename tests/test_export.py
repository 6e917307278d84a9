"""Exports: atomic writers, INRIA PLY, the .ss4d container, the animated GLB and the HTML viewer."""
from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import torch
from plyfile import PlyData
from safetensors.torch import save_file

from ss4d.export import export_4d
from ss4d.export.container import load_4d, read_4d_meta, save_4d
from ss4d.export.glb import gaussians_to_glb, save_animated_glb, srgb_to_linear, voxels_to_mesh
from ss4d.export.ply import PLY_PROPERTIES, Z_UP_TO_Y_UP, load_ply, save_ply
from ss4d.export.viewer import viewer_script, write_viewer
from ss4d.gaussians import Gaussians
from ss4d.io_utils import atomic_dir, atomic_file, atomic_write_bytes, atomic_write_text
from ss4d.render.camera import look_at_extrinsics
from ss4d.render.preview import voxel_colors_from_gaussians, voxels_to_quads


def rand_gaussians(n: int, seed: int = 0, dtype=torch.float32) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    return Gaussians(torch.rand(n, 3, generator=g).to(dtype), torch.randn(n, 1, 3, generator=g).to(dtype),
                     torch.randn(n, 3, generator=g).to(dtype) - 2, torch.randn(n, 4, generator=g).to(dtype) * 0.5,
                     torch.randn(n, 1, generator=g).to(dtype))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------------------------------------------
# io_utils
# ----------------------------------------------------------------------------------------------------------------
def test_atomic_write_bytes_refuses_then_overwrites(tmp_path):
    p = atomic_write_bytes(tmp_path / "sub" / "a.bin", b"one")
    assert p.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"one"
    atomic_write_text(p, "two", overwrite=True)
    assert p.read_text() == "two"
    assert leftovers(p.parent) == []


def test_atomic_file_cleans_up_on_error(tmp_path):
    target = tmp_path / "x.txt"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert not target.exists() and leftovers(tmp_path) == []


def test_atomic_dir(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as d:
        assert d.parent == tmp_path and d != target
        (d / "f.txt").write_text("v1")
        assert not target.exists()
    assert (target / "f.txt").read_text() == "v1"
    with pytest.raises(FileExistsError), atomic_dir(target):
        pass
    # a failure inside the block keeps the old folder and removes the temporary one
    with pytest.raises(ValueError), atomic_dir(target, overwrite=True) as d:
        (d / "f.txt").write_text("v2")
        raise ValueError("boom")
    assert (target / "f.txt").read_text() == "v1"
    with atomic_dir(target, overwrite=True) as d:
        (d / "g.txt").write_text("v3")
    assert sorted(p.name for p in target.iterdir()) == ["g.txt"]
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------------------------------------------
# PLY
# ----------------------------------------------------------------------------------------------------------------
def test_ply_layout_and_values(tmp_path):
    g = rand_gaussians(257)
    g._opacity[0, 0] = 40.0  # sigmoid saturates to 1.0 in float32: the stored logit must stay finite
    p = save_ply(g, tmp_path / "f.ply")
    ply = PlyData.read(str(p))
    assert ply.byte_order == "<" and not ply.text
    v = ply["vertex"].data
    assert v.dtype.names == PLY_PROPERTIES
    assert all(v.dtype[k] == np.dtype("<f4") for k in PLY_PROPERTIES)
    assert len(v) == 257

    def cols(*ks):
        return torch.from_numpy(np.stack([np.asarray(v[k]) for k in ks], -1).astype(np.float32))

    torch.testing.assert_close(cols("x", "y", "z"), g.get_xyz)
    assert np.all(np.asarray(v["nx"]) == 0)
    torch.testing.assert_close(cols("f_dc_0", "f_dc_1", "f_dc_2"), g._features_dc[:, 0])
    op = cols("opacity")
    assert torch.isfinite(op).all()
    torch.testing.assert_close(torch.sigmoid(op), g.get_opacity)
    torch.testing.assert_close(torch.exp(cols("scale_0", "scale_1", "scale_2")), g.get_scaling, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(cols("rot_0", "rot_1", "rot_2", "rot_3"), g.get_rotation)


def test_ply_round_trip(tmp_path):
    g = rand_gaussians(300, seed=1)
    back = load_ply(save_ply(g, tmp_path / "f.ply"))
    assert len(back) == len(g)
    torch.testing.assert_close(back.get_xyz, g.get_xyz)
    torch.testing.assert_close(back._features_dc, g._features_dc, rtol=0, atol=0)
    torch.testing.assert_close(back.get_colors, g.get_colors)
    torch.testing.assert_close(back.get_scaling, g.get_scaling, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(back.get_opacity, g.get_opacity, rtol=1e-5, atol=1e-6)
    # q and -q are the same rotation
    dots = (back.get_rotation * g.get_rotation).sum(-1).abs()
    torch.testing.assert_close(dots, torch.ones_like(dots), rtol=0, atol=1e-5)


def test_ply_transform_round_trip(tmp_path):
    g = rand_gaussians(64, seed=2)
    p = save_ply(g, tmp_path / "y.ply", transform=Z_UP_TO_Y_UP)
    v = PlyData.read(str(p))["vertex"].data
    xyz = g.get_xyz
    torch.testing.assert_close(torch.from_numpy(np.stack([v["x"], v["y"], v["z"]], -1)),
                               torch.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], -1))
    back = load_ply(p, transform=Z_UP_TO_Y_UP)
    torch.testing.assert_close(back.get_xyz, g.get_xyz, rtol=1e-5, atol=1e-6)
    Rg = _quat_mat(g.get_rotation)
    Rb = _quat_mat(back.get_rotation)
    torch.testing.assert_close(Rb, Rg, rtol=1e-4, atol=1e-5)


def _inria_attributes(max_sh_degree: int) -> list[str]:
    """The INRIA 3DGS ``GaussianModel.construct_list_of_attributes`` order, written out by hand."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * ((max_sh_degree + 1) ** 2 - 1))]
    return names + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


@pytest.mark.parametrize("deg", [0, 1, 3])
def test_ply_sh_padding_inria_loader(tmp_path, deg):
    g = rand_gaussians(33, seed=6)
    p = save_ply(g, tmp_path / "sh.ply", sh_degree=deg)
    el = PlyData.read(str(p)).elements[0]
    assert [q.name for q in el.properties] == _inria_attributes(deg)
    # what the INRIA loader does: f_rest_* sorted by index, exactly 3 (D+1)^2 - 3 of them, reshaped to (N, 3, ...)
    extra = sorted([q.name for q in el.properties if q.name.startswith("f_rest_")], key=lambda x: int(x.split("_")[-1]))
    assert len(extra) == 3 * (deg + 1) ** 2 - 3 == (45 if deg == 3 else len(extra))
    feats = np.zeros((len(g), len(extra)))
    for i, name in enumerate(extra):
        feats[:, i] = np.asarray(el[name])
    assert np.all(feats.reshape(len(g), 3, (deg + 1) ** 2 - 1) == 0)
    # the other columns are unchanged by the padding
    ref = PlyData.read(str(save_ply(g, tmp_path / "ref.ply")))["vertex"]
    for k in PLY_PROPERTIES:
        assert np.array_equal(np.asarray(el[k]), np.asarray(ref[k])), k
    back = load_ply(p)
    torch.testing.assert_close(back.get_xyz, g.get_xyz)
    with pytest.raises(ValueError):
        save_ply(g, tmp_path / "bad.ply", sh_degree=4)


def test_ply_y_up(tmp_path):
    g = rand_gaussians(80, seed=7)
    p = save_ply(g, tmp_path / "yup.ply", up="y", sh_degree=3)
    v = PlyData.read(str(p))["vertex"]
    xyz = g.get_xyz.double().numpy()
    got = np.stack([np.asarray(v[k], dtype=np.float64) for k in "xyz"], -1)
    np.testing.assert_allclose(got, np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], -1), atol=1e-6)  # x, z, -y
    R = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
    assert np.array_equal(R @ [0, 0, 1], [0, 1, 0]) and np.isclose(np.linalg.det(R), 1)  # +z up becomes +y up
    # every Gaussian's shape: the covariance in the file is R Sigma R^T of the original one
    rot = np.stack([np.asarray(v[f"rot_{i}"], dtype=np.float64) for i in range(4)], -1)
    scale = np.exp(np.stack([np.asarray(v[f"scale_{i}"], dtype=np.float64) for i in range(3)], -1))
    sigma = _covariances(g.get_rotation.double().numpy(), g.get_scaling.double().numpy())
    np.testing.assert_allclose(_covariances(rot, scale), R @ sigma @ R.T, rtol=1e-4, atol=1e-9)
    back = load_ply(p, up="y")
    torch.testing.assert_close(back.get_xyz, g.get_xyz, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_quat_mat(back.get_rotation), _quat_mat(g.get_rotation), rtol=1e-4, atol=1e-5)
    # "y-down" is the official TRELLIS matrix (x, -z, y)
    vd = PlyData.read(str(save_ply(g, tmp_path / "yd.ply", up="y-down")))["vertex"]
    np.testing.assert_allclose(np.stack([np.asarray(vd[k], dtype=np.float64) for k in "xyz"], -1),
                               np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], -1), atol=1e-6)
    with pytest.raises(ValueError):
        save_ply(g, tmp_path / "bad.ply", up="x")


def _quat_mat(q):
    from ss4d.render.rasterizer import quaternion_to_matrix

    return quaternion_to_matrix(q.double())


def test_ply_errors(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    with pytest.raises(ValueError):
        load_ply(bad)
    with pytest.raises(FileExistsError):
        save_ply(rand_gaussians(3), bad, overwrite=False)


# ----------------------------------------------------------------------------------------------------------------
# .ss4d container
# ----------------------------------------------------------------------------------------------------------------
def test_container_bit_exact(tmp_path):
    frames = [rand_gaussians(50, seed=3), rand_gaussians(0, seed=4), rand_gaussians(17, seed=5, dtype=torch.float16)]
    frames[0].meta = {"note": "first"}
    coords = [torch.randint(0, 64, (n, 3), dtype=torch.int32) for n in (7, 0, 3)]
    inputs = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    p = save_4d(tmp_path / "a.ss4d", frames, 12.5, coords, {"prompt": "rose", "seed": 42}, input_frames=inputs)
    assert leftovers(tmp_path) == []
    gl, meta, cs = load_4d(p)
    assert len(gl) == 3
    for a, b in zip(gl, frames):
        for k, t in b.raw_tensors().items():
            u = a.raw_tensors()[k]
            assert u.dtype == t.dtype and torch.equal(u, t), k
        assert a.aabb == b.aabb and a.scaling_bias == b.scaling_bias and a.opacity_bias == b.opacity_bias
        assert a.mininum_kernel_size == b.mininum_kernel_size
    assert gl[0].meta == {"note": "first"}
    assert all(torch.equal(a, b) for a, b in zip(cs, coords))
    assert meta["fps"] == 12.5 and meta["frame_count"] == 3 and meta["format"] == "ss4d"
    assert meta["extra"] == {"prompt": "rose", "seed": 42}
    assert "z-up" in meta["conventions"] and "opencv" in meta["conventions"]
    assert meta["gaussian_params"]["scaling_bias"] == 0.004 and meta["gaussian_params"]["sh_degree"] == 0
    assert meta["generator"]["name"] == "ss4d"
    assert np.array_equal(meta["input_frames"].numpy(), inputs)
    assert read_4d_meta(p)["frame_count"] == 3
    # no coords stored -> None; per-frame Gaussian constants that differ are kept per frame
    frames[1].opacity_bias = 0.2
    gl2, meta2, cs2 = load_4d(save_4d(tmp_path / "b.ss4d", frames, 8))
    assert cs2 is None and "frame_gaussian_params" in meta2 and gl2[1].opacity_bias == 0.2
    # the same frame object repeated (a static sequence) and aliased views are stored as copies
    x = torch.randn(5, 3)
    aliased = Gaussians(x, x[:, None], x, torch.randn(5, 4), torch.randn(5, 1))
    gl3, _, _ = load_4d(save_4d(tmp_path / "s.ss4d", [frames[0], frames[0], aliased], 8))
    assert torch.equal(gl3[1]._xyz, frames[0]._xyz) and torch.equal(gl3[2]._features_dc, x[:, None])


def test_container_rejects_other_files(tmp_path):
    junk = tmp_path / "junk.ss4d"
    junk.write_bytes(os.urandom(100))
    with pytest.raises(ValueError, match="not an ss4d container"):
        load_4d(junk)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not an ss4d container"):
        load_4d(plain)
    with pytest.raises(FileNotFoundError):
        load_4d(tmp_path / "missing.ss4d")
    p = save_4d(tmp_path / "c.ss4d", [rand_gaussians(4)], 10)
    with pytest.raises(FileExistsError):
        save_4d(p, [rand_gaussians(4)], 10, overwrite=False)
    with pytest.raises(ValueError):
        save_4d(tmp_path / "d.ss4d", [rand_gaussians(4)], 0)


# ----------------------------------------------------------------------------------------------------------------
# GLB
# ----------------------------------------------------------------------------------------------------------------
def _brute_force_exposed(coords: np.ndarray) -> int:
    occ = {tuple(c) for c in coords.tolist()}
    n = 0
    for c in occ:
        for d in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)):
            if (c[0] + d[0], c[1] + d[1], c[2] + d[2]) not in occ:
                n += 1
    return n


def test_voxels_to_mesh_exposed_faces():
    rng = np.random.default_rng(0)
    coords = rng.integers(0, 6, (120, 3))  # dense enough for many internal faces, with duplicates
    coords = np.concatenate([coords, [[0, 0, 0], [63, 63, 63]]])
    colors = rng.random((len(coords), 3)).astype(np.float32)
    v, f, vc, n = voxels_to_mesh(coords, colors, 64, return_normals=True)
    exposed = _brute_force_exposed(coords)
    assert len(f) == 2 * exposed and len(v) == 4 * exposed and len(vc) == len(v)
    assert f.dtype == np.int32 and v.dtype == np.float32 and f.max() == len(v) - 1
    # triangles are counter-clockwise seen from outside: geometric normal == stored normal
    tri = v[f]
    gn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    gn /= np.linalg.norm(gn, axis=1, keepdims=True)
    assert np.allclose(gn, n[f[:, 0]], atol=1e-5)
    # world box: voxel i spans [i/64 - 0.5, (i+1)/64 - 0.5]
    assert np.isclose(v.min(), -0.5) and np.isclose(v.max(), 0.5)
    # each face carries its voxel's colour (first occurrence of duplicates)
    quads, _, vid, uniq = voxels_to_quads(coords, 64)
    first = {}
    for i, c in enumerate(coords.tolist()):
        first.setdefault(tuple(c), i)
    want = np.stack([colors[first[tuple(c)]] for c in uniq[vid].tolist()])
    assert np.allclose(vc[::4], want)
    # a single voxel: 6 faces centred on (i + 0.5)/res - 0.5
    v1, f1, _ = voxels_to_mesh(np.array([[10, 20, 30]]), None, 64)
    assert len(f1) == 12
    assert np.allclose(v1.mean(0), (np.array([10, 20, 30]) + 0.5) / 64 - 0.5)


def _accessor_array(g: pygltflib.GLTF2, blob: bytes, idx: int) -> np.ndarray:
    acc = g.accessors[idx]
    view = g.bufferViews[acc.bufferView]
    dtype = {5126: "<f4", 5125: "<u4"}[acc.componentType]
    ncomp = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    a = np.frombuffer(blob, dtype=dtype, count=acc.count * ncomp, offset=start)
    return a.reshape(acc.count, ncomp) if ncomp > 1 else a


def _voxel_frames(T=3, seed=0):
    rng = np.random.default_rng(seed)
    vox = [np.unique(rng.integers(20, 30 + 2 * t, (60, 3)), axis=0).astype(np.int32) for t in range(T)]
    cols = [rng.random((len(v), 3)).astype(np.float32) for v in vox]
    return vox, cols


def test_animated_glb_structure(tmp_path):
    T, fps = 4, 8.0
    vox, cols = _voxel_frames(T)
    p = save_animated_glb(tmp_path / "a.glb", fps=fps, voxels=vox, colors=cols)
    assert p.read_bytes()[:4] == b"glTF"
    g = pygltflib.GLTF2().load(str(p))
    blob = g.binary_blob()
    assert len(g.nodes) == T + 1 and g.scenes[g.scene].nodes == [0]
    root = g.nodes[0]
    assert root.children == list(range(1, T + 1))
    assert np.allclose(root.rotation, [-math.sqrt(0.5), 0, 0, math.sqrt(0.5)])  # z-up -> y-up
    assert len(g.meshes) == T
    for t in range(T):
        node = g.nodes[t + 1]
        assert node.mesh == t and node.scale == ([1.0] * 3 if t == 0 else [0.0] * 3)
        prim = g.meshes[t].primitives[0]
        pos = _accessor_array(g, blob, prim.attributes.POSITION)
        acc = g.accessors[prim.attributes.POSITION]
        assert np.allclose(acc.min, pos.min(0)) and np.allclose(acc.max, pos.max(0))
        v, f, vc = voxels_to_mesh(vox[t], cols[t])
        assert np.array_equal(pos, v)
        assert np.array_equal(_accessor_array(g, blob, prim.indices), f.reshape(-1).astype(np.uint32))
        col = _accessor_array(g, blob, prim.attributes.COLOR_0)
        assert np.allclose(col, srgb_to_linear(vc), atol=1e-6)
        assert prim.attributes.NORMAL is not None
    (anim,) = g.animations
    assert len(anim.channels) == T and len(anim.samplers) == T
    times_idx = {s.input for s in anim.samplers}
    assert len(times_idx) == 1
    times = _accessor_array(g, blob, times_idx.pop())
    assert np.allclose(times, np.arange(T + 1) / fps)
    tacc = g.accessors[anim.samplers[0].input]
    assert np.isclose(tacc.min[0], 0.0) and np.isclose(tacc.max[0], T / fps)
    shown = []
    for ch in anim.channels:
        s = anim.samplers[ch.sampler]
        assert s.interpolation == "STEP" and ch.target.path == "scale"
        shown.append(_accessor_array(g, blob, s.output)[:, 0])
    shown = np.stack(shown)  # [node, key]
    targets = [ch.target.node for ch in anim.channels]
    assert sorted(targets) == list(range(1, T + 1))
    # exactly one frame visible at every key: frame k at time k/fps, the last key repeats the last frame
    assert np.array_equal(shown.sum(0), np.ones(T + 1))
    visible = [targets[i] - 1 for i in shown.argmax(0)]
    assert visible == list(range(T)) + [T - 1]


def test_glb_from_meshes_and_gaussians(tmp_path):
    # explicit meshes, with an empty frame (node without a mesh)
    tri = (np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), np.array([[0, 1, 2]]),
           np.array([[255, 0, 0]] * 3, np.uint8))
    empty = (np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    g = pygltflib.GLTF2().load(str(save_animated_glb(tmp_path / "m.glb", [tri, empty, tri], fps=2, y_up=False)))
    assert g.nodes[2].mesh is None and g.nodes[1].mesh == 0 and g.nodes[0].rotation is None
    assert len(g.animations[0].channels) == 3
    with pytest.raises(ValueError):
        save_animated_glb(tmp_path / "x.glb", fps=2)
    # from Gaussians in the decoder's voxel-major layout: colours = mean colour of each voxel's Gaussians
    vox, _ = _voxel_frames(2, seed=1)
    G = 4
    frames = []
    for v in vox:
        xyz = torch.from_numpy((v + 0.5) / 64 - 0.5).float().repeat_interleave(G, 0)
        col = torch.rand(len(xyz), 3)
        frames.append(Gaussians.from_activated(xyz, col, torch.full((len(xyz), 3), 0.01),
                                               torch.tensor([[1.0, 0, 0, 0]]).repeat(len(xyz), 1),
                                               torch.full((len(xyz), 1), 0.5)))
    c0 = voxel_colors_from_gaussians(frames[0], vox[0])
    want = frames[0].get_colors.clamp(0, 1).reshape(-1, G, 3).mean(1).numpy()
    assert np.allclose(c0, want, atol=1e-5)
    p = gaussians_to_glb(tmp_path / "g.glb", frames, 10, vox)
    g = pygltflib.GLTF2().load(str(p))
    assert len(g.nodes) == 3 and len(g.meshes) == 2


def test_glb_imports_in_blender(tmp_path):
    bpy = pytest.importorskip("bpy")
    vox, cols = _voxel_frames(3)
    p = save_animated_glb(tmp_path / "b.glb", fps=6, voxels=vox, colors=cols)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(p))
    assert len(bpy.data.actions) >= 1
    objs = {o.name: o for o in bpy.data.objects}
    assert {"ss4d_root", "frame_0000", "frame_0001", "frame_0002"} <= set(objs)
    assert all(objs[f"frame_{t:04d}"].animation_data is not None for t in range(3))
    scene = bpy.context.scene
    scene_fps = scene.render.fps / scene.render.fps_base
    for t in range(3):  # at the time of key t exactly frame t is visible
        scene.frame_set(int(round(t * scene_fps / 6)))
        scales = [objs[f"frame_{k:04d}"].scale[0] for k in range(3)]
        assert np.allclose(scales, np.eye(3)[t]), (t, scales)


# ----------------------------------------------------------------------------------------------------------------
# HTML viewer
# ----------------------------------------------------------------------------------------------------------------
def _viewer_frames(tmp_path, T=2, n=40):
    plys = [save_ply(rand_gaussians(n, seed=10 + t), tmp_path / "ply" / f"frame {t:02d}.ply") for t in range(T)]
    return plys


def _config(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="ss4d-config">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def _embedded_records(html: str) -> list[bytes]:
    found = re.findall(r'<script>ss4dFrame\((\d+),"([A-Za-z0-9+/=]*)"\);</script>', html)
    assert [int(i) for i, _ in found] == list(range(len(found)))
    return [base64.b64decode(b) for _, b in found]


def _decode_record(rec: bytes) -> dict:
    """Independent reader of the documented SS4F layout (header, uint16 xyz, int8 quat, uint8 rgba, uint8 log s)."""
    magic, n = rec[:4], int.from_bytes(rec[4:8], "little")
    lo, hi = np.frombuffer(rec[8:20], "<f4").astype(np.float64), np.frombuffer(rec[20:32], "<f4").astype(np.float64)
    smin, smax = np.frombuffer(rec[32:40], "<f4").astype(np.float64)
    assert magic == b"SS4F" and len(rec) == 40 + 17 * n
    o = 40
    q = np.frombuffer(rec[o:o + 6 * n], "<u2").reshape(n, 3)
    o += 6 * n
    rot = np.frombuffer(rec[o:o + 4 * n], np.int8).reshape(n, 4) / 127.0
    o += 4 * n
    rgba = np.frombuffer(rec[o:o + 4 * n], np.uint8).reshape(n, 4) / 255.0
    o += 4 * n
    ls = np.frombuffer(rec[o:o + 3 * n], np.uint8).reshape(n, 3)
    return {"xyz": lo + q / 65535.0 * (hi - lo), "rot": rot / np.linalg.norm(rot, axis=1, keepdims=True),
            "rgb": rgba[:, :3], "opacity": rgba[:, 3], "scale": np.exp(smin + ls / 255.0 * (smax - smin)),
            "box": (lo, hi), "srange": (smin, smax)}


def _covariances(rot, scale) -> np.ndarray:
    from ss4d.render.rasterizer import quaternion_to_matrix

    M = quaternion_to_matrix(torch.as_tensor(rot, dtype=torch.float64)) * torch.as_tensor(scale)[:, None, :]
    return (M @ M.transpose(1, 2)).numpy()


def test_viewer_html(tmp_path):
    frames = [rand_gaussians(50, seed=10 + t) for t in range(3)]
    frames[1]._opacity[:5] = -30.0  # invisible: left out of the record
    p = write_viewer(tmp_path, frames, fps=12)
    html = p.read_text()
    assert p.name == "viewer.html"
    cfg = _config(html)
    assert cfg["frameCount"] == 3 and cfg["fps"] == 12
    # self-contained: no external scripts, stylesheets, CDNs or fetches
    assert not re.search(r'(src|href)\s*=', html, re.I)
    assert "http://" not in html and "https://" not in html and "fetch(" not in html
    assert viewer_script() in html and "webgl2" in html
    # the viewer script comes before the frames, the end marker after them
    assert html.index("root.ss4dFrame =") < html.index("<script>ss4dFrame(0,") < html.index("ss4dFramesEnd();</script>")
    recs = _embedded_records(html)
    assert len(recs) == 3
    for t, (g, rec) in enumerate(zip(frames, recs)):
        d = _decode_record(rec)
        keep = (g.get_opacity[:, 0] >= 0.5 / 255).numpy()
        assert len(d["xyz"]) == keep.sum() == (45 if t == 1 else 50)
        xyz = g.get_xyz.double().numpy()[keep]
        lo, hi = d["box"]
        np.testing.assert_allclose(lo, xyz.min(0), atol=1e-6)
        np.testing.assert_allclose(hi, xyz.max(0), atol=1e-6)
        np.testing.assert_allclose(d["xyz"], xyz, atol=(hi - lo).max() / 65535 + 1e-6)
        np.testing.assert_allclose(d["rgb"], g.get_colors.clamp(0, 1).double().numpy()[keep], atol=0.5 / 255 + 1e-9)
        np.testing.assert_allclose(d["opacity"], g.get_opacity[:, 0].double().numpy()[keep], atol=0.5 / 255 + 1e-9)
        s = g.get_scaling.double().numpy()[keep]
        step = (d["srange"][1] - d["srange"][0]) / 255
        np.testing.assert_allclose(np.log(d["scale"]), np.log(s), atol=step / 2 + 1e-6)
        # the shape each splat is drawn with: covariances agree within the quantization
        want = _covariances(g.get_rotation.double().numpy()[keep], s)
        got = _covariances(d["rot"], d["scale"])
        rel = np.linalg.norm(got - want, axis=(1, 2)) / np.linalg.norm(want, axis=(1, 2))
        assert rel.max() < 0.05 and np.median(rel) < 0.02
    # PLY paths are read back (with their up axis) to the same records
    plys = _viewer_frames(tmp_path, T=2)
    recs_ply = _embedded_records(write_viewer(tmp_path / "web", plys, fps=12).read_text())
    recs_g = _embedded_records(write_viewer(tmp_path / "web2", [rand_gaussians(40, seed=10 + t) for t in range(2)],
                                            fps=12).read_text())
    for a, b in zip(recs_ply, recs_g):
        np.testing.assert_allclose(_decode_record(a)["xyz"], _decode_record(b)["xyz"], atol=1e-4)
    yplys = [save_ply(rand_gaussians(40, seed=10), tmp_path / "y.ply", up="y")]
    d_y = _decode_record(_embedded_records(write_viewer(tmp_path / "web3", yplys, fps=12, up="y").read_text())[0])
    np.testing.assert_allclose(d_y["xyz"], _decode_record(recs_g[0])["xyz"], atol=1e-4)
    with pytest.raises(FileNotFoundError):
        write_viewer(tmp_path, [tmp_path / "missing.ply"], fps=12)
    with pytest.raises(ValueError):
        write_viewer(tmp_path, [], fps=12)


NODE = shutil.which("node")

_NODE_HARNESS = r"""
const vm = require('vm'), fs = require('fs');
const ctx = {console: console, Math: Math};
vm.createContext(ctx);
vm.runInContext(fs.readFileSync(process.argv[2], 'utf8'), ctx);
const V = ctx.SS4DViewer;
const out = {frames: [], records: []};
for (const f of process.argv.slice(4)) {
  const b = fs.readFileSync(f);
  const buf = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
  const fr = f.endsWith('.ply') ? V.parsePly(buf) : V.decodeFrame(buf);
  (f.endsWith('.ply') ? out.frames : out.records).push({count: fr.count, position: Array.from(fr.position),
    color: Array.from(fr.color), cov: Array.from(fr.cov)});
}
const view = V.lookAt([1.2, -0.8, 0.9], [0, 0, 0], [0, 0, 1]);
out.view = view;
const fr0 = out.frames[0];
out.order = Array.from(V.sortByDepth(Float32Array.from(fr0.position), fr0.count, view, 0.2));
fs.writeFileSync(process.argv[3], JSON.stringify(out));
"""


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_viewer_js_parses_ply_like_python(tmp_path):
    plys = _viewer_frames(tmp_path, T=2, n=64)
    recs = _embedded_records(write_viewer(tmp_path, plys, fps=5).read_text())
    rec_files = []
    for t, r in enumerate(recs):
        rec_files.append(tmp_path / f"rec{t}.bin")
        rec_files[-1].write_bytes(r)
    js = tmp_path / "viewer.js"
    js.write_text(viewer_script())
    harness = tmp_path / "harness.js"
    harness.write_text(_NODE_HARNESS)
    out = tmp_path / "out.json"
    subprocess.run([NODE, str(harness), str(js), str(out), *map(str, plys), *map(str, rec_files)], check=True,
                   timeout=60)
    res = json.loads(out.read_text())
    for t, fr in enumerate(res["frames"]):
        g = rand_gaussians(64, seed=10 + t)
        assert fr["count"] == 64
        np.testing.assert_allclose(np.reshape(fr["position"], (-1, 3)), g.get_xyz.numpy(), rtol=1e-6, atol=1e-6)
        col = np.reshape(fr["color"], (-1, 4))
        np.testing.assert_allclose(col[:, :3], g.get_colors.clamp(0, 1).numpy(), atol=1e-5)
        np.testing.assert_allclose(col[:, 3], g.get_opacity[:, 0].numpy(), atol=1e-5)
        S = _covariances(g.get_rotation.double().numpy(), g.get_scaling.double().numpy())
        want = np.stack([S[:, 0, 0], S[:, 0, 1], S[:, 0, 2], S[:, 1, 1], S[:, 1, 2], S[:, 2, 2]], -1)
        np.testing.assert_allclose(np.reshape(fr["cov"], (-1, 6)), want, rtol=1e-4, atol=1e-9)
    # the embedded records decode in JS exactly as the documented layout says (Python reader above)
    for rec, fr in zip(recs, res["records"]):
        d = _decode_record(rec)
        assert fr["count"] == len(d["xyz"])
        np.testing.assert_allclose(np.reshape(fr["position"], (-1, 3)), d["xyz"], atol=1e-6)
        col = np.reshape(fr["color"], (-1, 4))
        np.testing.assert_allclose(col[:, :3], d["rgb"], atol=1e-6)
        np.testing.assert_allclose(col[:, 3], d["opacity"], atol=1e-6)
        S = _covariances(d["rot"], d["scale"])
        want = np.stack([S[:, 0, 0], S[:, 0, 1], S[:, 0, 2], S[:, 1, 1], S[:, 1, 2], S[:, 2, 2]], -1)
        np.testing.assert_allclose(np.reshape(fr["cov"], (-1, 6)), want, rtol=1e-4, atol=1e-9)
    # camera: same OpenCV look-at as ss4d.render.camera
    E = look_at_extrinsics((1.2, -0.8, 0.9)).numpy()
    np.testing.assert_allclose(np.reshape(res["view"], (4, 4)), E, atol=1e-6)
    # front-to-back order (16-bit buckets: compare the depths, not the exact permutation)
    g0 = rand_gaussians(64, seed=10)
    z = g0.get_xyz.double().numpy() @ E[2, :3] + E[2, 3]
    order = res["order"]
    assert sorted(order) == sorted(np.nonzero(z > 0.2)[0].tolist())
    assert np.all(np.diff(z[order]) >= -1e-4)


GLSLANG = shutil.which("glslangValidator")


@pytest.mark.skipif(NODE is None or GLSLANG is None, reason="node / glslangValidator not installed")
def test_viewer_shaders_compile(tmp_path):
    js = tmp_path / "viewer.js"
    js.write_text(viewer_script())
    dump = tmp_path / "dump.js"
    dump.write_text("const vm=require('vm'),fs=require('fs');const c={};vm.createContext(c);"
                    "vm.runInContext(fs.readFileSync(process.argv[2],'utf8'),c);"
                    "fs.writeFileSync(process.argv[3]+'/s.vert',c.SS4DViewer.VS);"
                    "fs.writeFileSync(process.argv[3]+'/s.frag',c.SS4DViewer.FS);")
    subprocess.run([NODE, str(dump), str(js), str(tmp_path)], check=True, timeout=60)
    for name in ("s.vert", "s.frag"):
        r = subprocess.run([GLSLANG, str(tmp_path / name)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def test_export_4d(tmp_path):
    frames = [rand_gaussians(30, seed=20 + t) for t in range(2)]
    coords = [np.unique(np.random.default_rng(t).integers(0, 64, (10, 3)), axis=0) for t in range(2)]
    out = export_4d(tmp_path / "asset", frames, 6, coords=coords)
    assert out["ss4d"].is_file() and out["glb"].is_file() and out["viewer"].is_file()
    assert [p.name for p in out["ply"]] == ["frame_000.ply", "frame_001.ply"]
    assert all(p.is_file() for p in out["ply"]) and "renders" not in out
    with pytest.raises(FileExistsError):  # an existing, non-empty asset folder is kept
        export_4d(tmp_path / "asset", frames, 6)
    gl, meta, cs = load_4d(out["ss4d"])
    assert meta["fps"] == 6 and torch.equal(gl[1]._xyz, frames[1]._xyz)
    assert np.array_equal(cs[0].numpy(), coords[0])
    assert struct.unpack("<I", out["glb"].read_bytes()[4:8])[0] == 2  # glTF 2.0 binary
