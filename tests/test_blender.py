"""`ss4d data render`: Blender rendering of animated assets into a clip dataset.

The pure parts (file checks, vertex budget, frame sampling, normalisation, camera conversion, ids, CLI, the message
without bpy) always run; the rendering tests need `bpy` (the `data` extra) and the shared assets and are skipped
cleanly otherwise. Renders are tiny (<= 80 px, Cycles 16 spp / Workbench, T <= 3) to keep the module under ~2 min.
"""
from __future__ import annotations

import json
import math
import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ss4d.data import blender as B
from ss4d.data import render_assets as RA
from ss4d.render.camera import Camera, blender_c2w_to_opencv_extrinsics, orbit_camera

needs_bpy = pytest.mark.skipif(not B.have_bpy(), reason="bpy not installed (pip install ss4d[data])")


# ================================================================================================================
# pure helpers
# ================================================================================================================
def test_vertex_budget_threshold():
    B.check_vertex_budget(999_999)                      # default limit 10^6
    B.check_vertex_budget(5, max_vertices=6)
    for n, cap in ((1_000_000, B.DEFAULT_MAX_VERTICES), (6, 6), (7, 6)):
        with pytest.raises(B.AssetError) as e:
            B.check_vertex_budget(n, cap)
        assert e.value.code == "too_many_vertices" and "limit" in e.value.message
    B.check_vertex_budget(10**9, None)                  # no cap
    B.check_vertex_budget(10**9, 0)


def test_sample_frames_and_bounds_frames():
    np.testing.assert_allclose(B.sample_frames(0, 100.8, 3), [0, 50.4, 100.8])
    np.testing.assert_allclose(B.sample_frames(5, 5, 4), [5, 5, 5, 5])   # static clip
    np.testing.assert_allclose(B.sample_frames(2, 10, 1), [2])
    with pytest.raises(ValueError):
        B.sample_frames(0, 1, 0)
    f = B.bounds_frames(0, 100.8, [0, 50.4, 100.8])
    assert 50.4 in f and 100.8 in f and 100 in f and len(f) == 103     # every integer frame + the samples
    assert len(B.bounds_frames(0, 10000, [0, 5000, 10000], max_frames=64)) <= 64 + 3


def test_normalization_from_bounds():
    c, s = B.normalization_from_bounds([-1, 0, 2], [3, 1, 4])
    np.testing.assert_allclose(c, [1, 0.5, 3])
    assert s == pytest.approx(0.25)
    lo = (np.array([-1, 0, 2]) - c) * s
    hi = (np.array([3, 1, 4]) - c) * s
    assert (hi - lo).max() == pytest.approx(1.0) and np.allclose(lo + hi, 0)
    with pytest.raises(B.AssetError):
        B.normalization_from_bounds([0, 0, 0], [0, 0, 0])
    with pytest.raises(B.AssetError):
        B.normalization_from_bounds([0, 0, np.nan], [1, 1, 1])


def test_opencv_blender_camera_round_trip():
    for yaw, pitch in ((0.3, 0.2), (2.0, -1.0), (-2.5, 1.2)):
        cam = orbit_camera(yaw, pitch, 2.0)
        c2w = B.opencv_to_blender_c2w(cam.extrinsics.numpy())
        assert np.allclose(c2w[:3, 3], cam.position.numpy(), atol=1e-6)
        # Blender cameras look down their -z axis: towards the origin here
        assert np.allclose(-c2w[:3, 2], -cam.position.numpy() / np.linalg.norm(cam.position.numpy()), atol=1e-6)
        back = blender_c2w_to_opencv_extrinsics(torch.tensor(c2w, dtype=torch.float64))
        assert torch.allclose(back.float(), cam.extrinsics, atol=1e-6)


def _glb(json_bytes: bytes) -> bytes:
    json_bytes += b" " * (-len(json_bytes) % 4)
    body = struct.pack("<I4s", len(json_bytes), b"JSON") + json_bytes
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def test_check_asset_file(tmp_path):
    cases = {
        "notes.txt": (b"hello", "not_3d"),
        "empty.glb": (b"", "empty"),
        "garbage.glb": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "corrupt"),
        "truncated.glb": (_glb(b'{"asset":{"version":"2.0"}}')[:-8] , "corrupt"),
        "bad.gltf": (b"{not json", "corrupt"),
        "binary.obj": (b"v 0 0 0\x00\x01", "corrupt"),
    }
    for name, (data, code) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(B.AssetError) as e:
            B.check_asset_file(p)
        assert e.value.code == code, name
        assert name in e.value.message
    with pytest.raises(B.AssetError) as e:
        B.check_asset_file(tmp_path / "missing.glb")
    assert e.value.code == "missing"
    ok = tmp_path / "ok.glb"
    ok.write_bytes(_glb(b'{"asset":{"version":"2.0"}}'))
    assert B.check_asset_file(ok) == "gltf"
    (tmp_path / "ok.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    assert B.check_asset_file(tmp_path / "ok.obj") == "obj"


def test_ids_and_selection(tmp_path):
    assert RA.clip_ids_for("Fox", ["Walk", "Run", "A|B c", "A|B c"]) == \
        ["Fox__Walk", "Fox__Run", "Fox__A_B_c", "Fox__A_B_c_2"]
    ids = RA.asset_ids([tmp_path / "a/x.glb", tmp_path / "b/x.glb", tmp_path / "y.fbx"], ["1" * 64, "2" * 64, "3" * 64])
    assert ids == ["x-11111111", "x-22222222", "y"]
    names = ["Run", "Survey", "Walk"]
    assert RA.select_clips(names) == names
    assert RA.select_clips(names, ["W*", "Run"]) == ["Run", "Walk"]
    assert RA.select_clips(names, (), 2) == ["Run", "Survey"]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.glb").write_bytes(b"x")
    (tmp_path / "d" / "readme.md").write_text("x")
    files, problems = RA.find_assets([tmp_path / "d", tmp_path / "d" / "a.glb", tmp_path / "nope.glb"])
    assert [f.name for f in files] == ["a.glb"]
    assert [p["code"] for p in problems] == ["missing"]


def test_cli_parser():
    import argparse

    from ss4d.data.cli import add_data_parser, cmd_data_render

    p = argparse.ArgumentParser()
    add_data_parser(p.add_subparsers(dest="command"))
    a = p.parse_args(["data", "render", "a.glb", "b/", "-o", "out", "--frames", "8", "--views", "12", "--size", "128",
                      "--resolution", "32", "--input-paths", "2", "--engine", "workbench", "--samples", "8",
                      "--workers", "2", "--seed", "3", "--clip", "Walk", "--clip", "Run"])
    assert a.func is cmd_data_render
    assert (a.assets, a.output, a.frames, a.views, a.size, a.resolution, a.input_paths, a.engine, a.samples,
            a.workers, a.seed, a.clip) == (["a.glb", "b/"], "out", 8, 12, 128, 32, 2, "workbench", 8, 2, 3,
                                           ["Walk", "Run"])
    d = p.parse_args(["data", "render", "a.glb", "-o", "o"])
    assert (d.frames, d.views, d.size, d.resolution, d.engine, d.samples, d.seed) == (16, 150, 512, 64, "cycles",
                                                                                     128, 0)
    with pytest.raises(SystemExit):
        p.parse_args(["data", "render", "a.glb", "-o", "o", "--frames", "0"])


def test_without_bpy_clear_message(monkeypatch, tmp_path, capsys):
    """With bpy not importable the modules still import; the command and the API say to install the data extra."""
    monkeypatch.setitem(sys.modules, "bpy", None)   # makes `import bpy` fail and find_spec return None
    assert not B.have_bpy()
    with pytest.raises(B.BpyMissingError, match=r"pip install ss4d\[data\]"):
        B.require_bpy()
    with pytest.raises(B.BpyMissingError, match=r"pip install ss4d\[data\]"):
        RA.render_assets([tmp_path / "x.glb"], tmp_path / "out")
    from ss4d.data.cli import main

    assert main(["data", "render", str(tmp_path / "x.glb"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install ss4d[data]" in err and "bpy" in err
    assert not (tmp_path / "out").exists()


# ================================================================================================================
# rendering (bpy)
# ================================================================================================================
SIZE, COND, T, V, R, K = 80, 64, 3, 4, 64, 2


def _rgba(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGBA"
        return np.array(im)


def _dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = mask.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out |= np.roll(np.roll(mask, dy, 0), dx, 1)
    return out


def _pixels(cam: Camera, pts: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    uv, z = cam.project(pts.float())
    px = torch.floor(uv * torch.tensor([cam.width, cam.height])).long().numpy()
    inside = (px[:, 0] >= 0) & (px[:, 0] < cam.width) & (px[:, 1] >= 0) & (px[:, 1] < cam.height) & (z.numpy() > 0)
    return px, inside


def _brute_voxels(v: np.ndarray, f: np.ndarray, res: int) -> np.ndarray:
    """Independent surface voxelisation: dense barycentric sampling of every triangle (spacing < 1/3 voxel).
    Returns the sorted unique voxel keys ``(x * res + y) * res + z``."""
    keys = []
    for tri in v[f]:
        a, b, c = tri.astype(np.float64)
        n = int(math.ceil(max(np.linalg.norm(b - a), np.linalg.norm(c - a), np.linalg.norm(c - b)) * res * 3)) + 1
        i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        keep = (i + j) <= n
        u, w = i[keep] / n, j[keep] / n
        p = a + (b - a) * u[:, None] + (c - a) * w[:, None]
        idx = np.clip(np.floor((np.clip(p, -0.5 + 1e-6, 0.5 - 1e-6) + 0.5) * res), 0, res - 1).astype(np.int64)
        keys.append(np.unique((idx[:, 0] * res + idx[:, 1]) * res + idx[:, 2]))
    return np.unique(np.concatenate(keys))


@pytest.fixture(scope="module")
def run1(tmp_path_factory, shared):
    if not B.have_bpy():
        pytest.skip("bpy not installed (pip install ss4d[data])")
    assets = shared / "data" / "assets"
    if not (assets / "Fox.glb").exists():
        pytest.skip("shared assets not found")
    tmp = tmp_path_factory.mktemp("blender_run1")
    (tmp / "garbage.glb").write_bytes(b"\x00" * 64)
    (tmp / "notes.txt").write_text("not a mesh")
    out = tmp / "ds"
    kw = dict(num_frames=T, num_views=V, size=SIZE, cond_size=COND, resolution=R, input_paths=K, engine="cycles",
              samples=16, workers=2, threads=1, seed=1, clips=["Square", "Walk"], progress=None)
    inputs = [assets / "AnimatedMorphCube.glb", assets / "Fox.glb", tmp / "garbage.glb", tmp / "notes.txt",
              tmp / "missing.glb"]
    summary = RA.render_assets(inputs, out, **kw)
    return {"root": out, "summary": summary, "kw": kw, "inputs": inputs}


def _clip(run, cid):
    from safetensors.torch import load_file

    d = run["root"] / "clips" / cid
    return d, load_file(str(d / "frames.safetensors")), json.loads((d / "cameras.json").read_text()), \
        json.loads((d / "meta.json").read_text())


CLIPS = ["AnimatedMorphCube__Square", "Fox__Walk"]


@needs_bpy
def test_run_summary_and_bad_inputs(run1):
    s = run1["summary"]
    assert sorted(s["written"]) == CLIPS
    assert not s["failed_clips"]
    codes = {r["asset"].split("/")[-1]: r["code"] for r in s["skipped_assets"]}
    assert codes == {"garbage.glb": "corrupt", "notes.txt": "not_3d", "missing.glb": "missing"}
    text = RA.format_summary(s)
    assert "2 clip(s) written" in text and "garbage.glb" in text and "notes.txt" in text and "missing.glb" in text
    root = run1["root"]
    errors = [json.loads(x) for x in (root / "errors.jsonl").read_text().splitlines()]
    assert {e["code"] for e in errors} == {"corrupt", "not_3d", "missing"} and all(e["error"] for e in errors)
    rows = {r["id"]: r for r in RA._read_jsonl(root / "manifest.jsonl")}
    assert sorted(rows) == CLIPS
    assert rows["Fox__Walk"]["clip"] == "Walk" and "static" not in rows["Fox__Walk"]["flags"]
    assert set(rows["Fox__Walk"]["flags"]) <= {"orbit_cond"}
    assets = {r["id"]: r for r in RA._read_jsonl(root / "assets.jsonl")}
    assert assets["Fox"]["clips"] == ["Run", "Survey", "Walk"]
    from ss4d.data.dataset import verify_dataset

    assert verify_dataset(root, full=True) == []


@needs_bpy
@pytest.mark.parametrize("cid", CLIPS)
def test_cameras_and_vertices_land_on_alpha(run1, cid):
    d, st, cams, meta = _clip(run1, cid)
    assert len(cams["views"]) == T and all(len(c) == V for c in cams["views"])
    assert len(cams["cond_paths"]) == K and all(len(p) == T for p in cams["cond_paths"])
    assert st["view_extrinsics"].shape == (T, V, 4, 4) and st["cond_paths_extrinsics"].shape == (K, T, 4, 4)
    for t in range(T):
        m = np.load(d / "meshes" / f"f{t:03d}.npz")
        verts = torch.from_numpy(m["vertices"])
        assert float(m["frame"]) == pytest.approx(meta["frames"][t])
        shots = [(Camera.from_dict(c), d / "views" / f"f{t:03d}_v{j:03d}.png", st["view_extrinsics"][t, j])
                 for j, c in enumerate(cams["views"][t])]
        shots += [(Camera.from_dict(p[t]), d / ("cond" if k == 0 else f"cond_{k}") / f"f{t:03d}.png",
                   st["cond_paths_extrinsics"][k, t]) for k, p in enumerate(cams["cond_paths"])]
        for cam, png, E in shots:
            assert torch.allclose(cam.extrinsics, E, atol=1e-6)          # json and safetensors agree
            assert math.degrees(cam.fovx) == pytest.approx(40.0, abs=1e-4) or "cond" in str(png)
            alpha = _rgba(png)[..., 3] > 0
            assert alpha.shape == (cam.height, cam.width)
            px, inside = _pixels(cam, verts)
            hit = _dilate(alpha)[px[inside, 1], px[inside, 0]]
            assert hit.mean() >= 0.99, (png.name, hit.mean())         # every vertex lands on the object
            # ... and the object is where the vertices are: alpha bbox == projected bbox (+-2 px, in-frame part)
            ys, xs = np.nonzero(alpha)
            if inside.all():
                assert abs(xs.min() - px[:, 0].min()) <= 2 and abs(xs.max() - px[:, 0].max()) <= 2, png.name
                assert abs(ys.min() - px[:, 1].min()) <= 2 and abs(ys.max() - px[:, 1].max()) <= 2, png.name
    # the canonical box: every exported frame inside [-0.5, 0.5]^3 and the clip's longest side <= 1
    allv = np.concatenate([np.load(d / "meshes" / f"f{t:03d}.npz")["vertices"] for t in range(T)])
    assert np.abs(allv).max() <= 0.5 + 1e-5
    assert (allv.max(0) - allv.min(0)).max() <= 1 + 1e-5
    if cid.startswith("AnimatedMorphCube"):   # frame 0 is the rest cube: it fills the box exactly
        assert (allv.max(0) - allv.min(0)).max() == pytest.approx(1.0, abs=1e-5)


@needs_bpy
@pytest.mark.parametrize("cid", CLIPS)
def test_voxels_match_meshes_and_alpha(run1, cid):
    from ss4d.data.voxelize import voxel_centers, voxelize_mesh

    d, st, cams, meta = _clip(run1, cid)
    off = st["frame_offsets"]
    assert off.shape == (T + 1,) and st["coords"].shape[0] == int(off[-1]) == st["feats"].shape[0]
    assert st["feats"].dtype == torch.float16 and st["feats"].shape[1] == 4
    per_frame = []
    for t in range(T):
        c = st["coords"][int(off[t]):int(off[t + 1])]
        assert (c[:, 0] == t).all()
        vox = c[:, 1:]
        per_frame.append(vox)
        m = np.load(d / "meshes" / f"f{t:03d}.npz")
        # the module's voxeliser on the exported mesh reproduces the stored voxels exactly
        again = voxelize_mesh(torch.from_numpy(m["vertices"]), torch.from_numpy(m["faces"].astype(np.int64)), R)
        assert torch.equal(again, vox)
        # an independent brute-force voxelisation by dense triangle sampling agrees: every sampled voxel is
        # stored, and every stored voxel (exact triangle/box overlap includes grazing contacts) is next to one
        vi = vox.numpy().astype(np.int64)
        stored = (vi[:, 0] * R + vi[:, 1]) * R + vi[:, 2]
        brute = _brute_voxels(m["vertices"], m["faces"], R)
        assert np.isin(brute, stored).all()
        bgrid = np.zeros((R + 2,) * 3, bool)
        bgrid[brute // (R * R) + 1, (brute // R) % R + 1, brute % R + 1] = True
        near = np.zeros_like(bgrid)
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                for dz in (-1, 0, 1):
                    near |= np.roll(bgrid, (dx, dy, dz), (0, 1, 2))
        assert near[vi[:, 0] + 1, vi[:, 1] + 1, vi[:, 2] + 1].all()
        assert len(brute) >= 0.85 * len(stored)
        # voxel centres projected with the stored view cameras fall on the rendered alpha
        centres = voxel_centers(vox, R)
        hits = []
        for j, cd in enumerate(cams["views"][t]):
            cam = Camera.from_dict(cd)
            alpha = _rgba(d / "views" / f"f{t:03d}_v{j:03d}.png")[..., 3] > 0
            px, inside = _pixels(cam, centres)
            hits.append(alpha[px[inside, 1], px[inside, 0]])
        frac = np.concatenate(hits).mean()
        assert frac >= 0.95, (cid, t, frac)
        # stored features: coverage channel > 0 means the voxel was seen on alpha in some view
        feats = st["feats"][int(off[t]):int(off[t + 1])].float()
        assert (feats[:, 3] > 0).float().mean() >= 0.95
    # the asset moves: voxels, meshes and images change over time
    assert meta["flags"] == [] and meta["motion"] > 0.01
    assert not torch.equal(per_frame[0], per_frame[1])
    m0, m1 = (np.load(d / "meshes" / f"f{t:03d}.npz")["vertices"] for t in (0, 1))
    assert np.abs(m0 - m1).max() > 0.01
    assert np.abs(_rgba(d / "views/f000_v000.png").astype(int) - _rgba(d / "views/f001_v000.png")).max() > 0


@needs_bpy
def test_dataset_loader_reads_rendered_clips(run1):
    from ss4d.data.dataset import ClipDataset

    ds = ClipDataset(run1["root"], num_frames=2, views_per_frame=2, windows="first", seed=0)
    assert len(ds) == 2 and not ds.skipped
    s = ds[0]
    assert s["cond_frames"].shape == (2, COND, COND, 4)
    assert s["views"].shape == (2, 2, 4, SIZE, SIZE)
    assert s["occupancy"].shape == (2, R, R, R) and s["occupancy"].any()


@needs_bpy
def test_resume_skips_finished_clips(run1):
    root = run1["root"]
    logs = {p.name: p.stat().st_size for p in (root / "logs").glob("*.log")}
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "clips").rglob("*.png")}
    s = RA.render_assets(run1["inputs"][:2], root, **run1["kw"])
    assert s["written"] == [] and sorted(s["already_done"]) == CLIPS and not s["skipped_assets"]
    assert {p.name: p.stat().st_size for p in (root / "logs").glob("*.log")} == logs   # no worker started
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())
    assert len(RA._read_jsonl(root / "manifest.jsonl")) == 2
    with pytest.raises(ValueError, match="other settings"):
        RA.render_assets(run1["inputs"][:1], root, **{**run1["kw"], "num_frames": T + 1})
    # a driver killed after its worker finished a clip: the row is recovered from the worker's results file
    man = root / "manifest.jsonl"
    lines = man.read_text().splitlines()
    keep = [ln for ln in lines if '"Fox__Walk"' not in ln]
    fox_row = json.loads(next(ln for ln in lines if '"Fox__Walk"' in ln))
    man.write_text("\n".join(keep) + "\n")
    (root / ".work" / "Fox.results.jsonl").write_text(json.dumps({"event": "clip", "row": fox_row}) + "\n")
    s = RA.render_assets(run1["inputs"][:2], root, **run1["kw"])
    assert s["salvaged"] == 1 and s["written"] == [] and sorted(s["already_done"]) == CLIPS
    assert {p.name: p.stat().st_size for p in (root / "logs").glob("*.log")} == logs
    assert sorted(r["id"] for r in RA._read_jsonl(man)) == CLIPS


@needs_bpy
def test_static_asset_workbench_vertex_cap_and_import_failure(tmp_path, shared):
    """A mesh without animation becomes one `static` clip (Workbench engine); an asset over the vertex cap and a
    GLB Blender cannot import are skipped with their reason; the run goes on."""
    obj = tmp_path / "box.obj"
    v = [(x, y, z) for x in (-1, 1) for y in (-0.5, 0.5) for z in (-0.25, 0.25)]
    f = [(1, 2, 4, 3), (5, 7, 8, 6), (1, 5, 6, 2), (3, 4, 8, 7), (1, 3, 7, 5), (2, 6, 8, 4)]
    obj.write_text("".join(f"v {a} {b} {c}\n" for a, b, c in v) + "".join("f " + " ".join(map(str, q)) + "\n"
                                                                          for q in f))
    bad = tmp_path / "broken.glb"
    bad.write_bytes(_glb(b'{"asset": {"version": "2.0"}, "meshes": [{"primitives": [{"attributes": '
                         b'{"POSITION": 7}}]}], "nodes": [{"mesh": 0}], "scenes": [{"nodes": [0]}]}'))
    fox = shared / "data" / "assets" / "Fox.glb"
    out = tmp_path / "ds"
    s = RA.render_assets([obj, fox, bad], out, num_frames=2, num_views=2, size=48, resolution=32, input_paths=1,
                         engine="workbench", threads=1, max_vertices=100, progress=None)
    assert s["written"] == ["box__static"]
    codes = {r["asset_id"]: r["code"] for r in s["skipped_assets"]}
    assert codes["Fox"] == "too_many_vertices" and codes["broken"] in ("import_failed", "crashed", "no_geometry")
    assert "Fox" in RA.format_summary(s) and "broken" in RA.format_summary(s)
    row = RA._read_jsonl(out / "manifest.jsonl")[0]
    assert row["flags"][0] == "static" and row["clip"] == "static"
    d = out / "clips" / "box__static"
    m0, m1 = (np.load(d / "meshes" / f"f{t:03d}.npz") for t in (0, 1))
    assert np.array_equal(m0["vertices"], m1["vertices"]) and len(m0["faces"]) == 12
    ext = m0["vertices"].max(0) - m0["vertices"].min(0)
    np.testing.assert_allclose(np.sort(ext), [0.25, 0.5, 1.0], atol=1e-5)   # longest side 1, proportions kept
    np.testing.assert_allclose(m0["vertices"].max(0) + m0["vertices"].min(0), 0, atol=1e-6)
    cams = json.loads((d / "cameras.json").read_text())
    for t in range(2):
        for j, cd in enumerate(cams["views"][t]):
            cam = Camera.from_dict(cd)
            a = _rgba(d / "views" / f"f{t:03d}_v{j:03d}.png")[..., 3] > 0
            px, inside = _pixels(cam, torch.from_numpy(m0["vertices"]))
            assert inside.all() and _dilate(a)[px[:, 1], px[:, 0]].all()


@needs_bpy
def test_fbx_with_lights_imports(tmp_path, shared):
    """Blender 5.0's FBX importer sets a Cycles light property that no longer exists: FBX files with lights (5 of the
    training assets) failed with an AttributeError until ss4d gave that property a stand-in."""
    fish = shared / "data" / "train_assets" / "quaternius-fbx__Animals2016_Fish.fbx"
    if not fish.exists():
        pytest.skip(f"{fish} not found")
    s = RA.render_assets([fish], tmp_path / "ds", num_frames=2, num_views=1, size=32, resolution=16, input_paths=1,
                         engine="workbench", threads=1, max_clips=1, progress=None)
    assert not s["skipped_assets"], s["skipped_assets"]
    assert len(s["written"]) == 1


def test_worker_crash_and_timeout_are_reported(tmp_path, monkeypatch):
    """A worker that dies (or hangs past --timeout) costs only its asset: reported with the reason, run goes on."""
    monkeypatch.setattr(RA, "have_bpy", lambda: True)   # the fake workers below never import bpy
    asset = tmp_path / "thing.glb"
    asset.write_bytes(_glb(b'{"asset":{"version":"2.0"}}'))
    crash = tmp_path / "crash.sh"
    crash.write_text("#!/bin/sh\necho boom\nexit 3\n")
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\nsleep 60\n")
    for p in (crash, hang):
        p.chmod(0o755)
    s = RA.render_assets([asset, tmp_path / "notes.md"], tmp_path / "a", python=str(crash), progress=None)
    codes = {r["asset_id"]: r for r in s["skipped_assets"]}
    assert codes["thing"]["code"] == "crashed" and "status 3" in codes["thing"]["error"]
    assert codes["notes"]["code"] == "missing"
    assert "boom" in (tmp_path / "a" / "logs" / "thing.log").read_text()
    t0 = __import__("time").perf_counter()
    s = RA.render_assets([asset], tmp_path / "b", python=str(hang), timeout=1.0, progress=None)
    assert __import__("time").perf_counter() - t0 < 30
    assert s["skipped_assets"][0]["code"] == "crashed" and "timed out" in s["skipped_assets"][0]["error"]
    assert s["written"] == [] and "thing" in RA.format_summary(s)
