"""On-disk clip datasets: writer round trip, checksums, resume, broken clips, ClipDataset and collate."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import ss4d.data.dataset as dsmod
from ss4d.data import (
    ClipDataset,
    collate,
    make_clip,
    read_manifest,
    verify_dataset,
    voxel_centers,
    voxel_features,
    write_procedural_dataset,
)
from ss4d.data.dataset import clip_id, clip_seed, extract_features, sha256_file
from ss4d.render.camera import Camera, project_points
from ss4d.sparse.tensor import SparseTensor

T, R, V, S, NP = 4, 32, 4, 64, 2500
KW = dict(T=T, R=R, V=V, size=S, seed=5, num_points=NP, cond_size=48)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Many tiny ops (rasterizer tiles): one intra-op thread is fastest and robust on busy machines."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, _single_thread):
    root = tmp_path_factory.mktemp("ds") / "data"
    summary = write_procedural_dataset(root, 2, workers=0, **KW)
    assert summary["written"] == [clip_id(5, 0), clip_id(5, 1)] and not summary["failed"]
    return root


def _copy(dataset, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(dataset, dst)
    return dst


def test_layout_and_checksums(dataset):
    rows = read_manifest(dataset)
    assert [r["id"] for r in rows] == [clip_id(5, 0), clip_id(5, 1)]
    cfg = json.loads((dataset / "dataset.json").read_text())
    assert cfg["num_frames"] == T and cfg["resolution"] == R and cfg["num_views"] == V
    for row in rows:
        d = dataset / "clips" / row["id"]
        assert row["source"] == "procedural" and row["num_frames"] == T and row["resolution"] == R
        assert row["num_views"] == V and row["view_size"] == S and row["cond_size"] == 48
        assert row["feature"] == "color" and row["feat_dim"] == 4 and "static" not in row["flags"]
        names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
        expect = {"frames.safetensors", "cameras.json", "meta.json"}
        expect |= {f"views/f{t:03d}_v{v:03d}.png" for t in range(T) for v in range(V)}
        expect |= {f"cond/f{t:03d}.png" for t in range(T)}
        assert names == expect == set(row["files"])
        for rel, digest in row["files"].items():
            assert sha256_file(d / rel) == digest
        with Image.open(d / "views" / "f000_v000.png") as im:
            assert im.mode == "RGBA" and im.size == (S, S)
        with Image.open(d / "cond" / "f000.png") as im:
            assert im.mode == "RGBA" and im.size == (48, 48)
    assert not list((dataset / "clips").glob(".*"))  # no temporary folders left
    assert verify_dataset(dataset) == []


def test_frames_match_the_generator(dataset):
    row = read_manifest(dataset)[0]
    d = dataset / "clips" / row["id"]
    t = load_file(str(d / "frames.safetensors"))
    coords, feats, off = t["coords"], t["feats"], t["frame_offsets"]
    assert coords.dtype == torch.int32 and coords.shape[1] == 4
    assert feats.dtype == torch.float16 and feats.shape == (coords.shape[0], 4)
    assert off.tolist()[0] == 0 and off.tolist()[-1] == coords.shape[0]
    assert (off[1:] - off[:-1]).tolist() == row["num_voxels"]
    keys = [tuple(r) for r in coords.tolist()]
    assert keys == sorted(set(keys))
    assert t["view_extrinsics"].shape == (T, V, 4, 4) and t["view_intrinsics"].shape == (T, V, 3, 3)
    assert t["cond_extrinsics"].shape == (T, 4, 4)
    # voxels = an independent regeneration of the clip, voxelised per frame
    clip = make_clip(row["seed"], T, R, num_points=NP)
    assert clip.kind == row["kind"]
    for f in range(T):
        assert torch.equal(coords[off[f]:off[f + 1], 1:], clip.voxels(f))
        assert bool((coords[off[f]:off[f + 1], 0] == f).all())
    # cameras.json == the tensors
    cams = json.loads((d / "cameras.json").read_text())
    assert len(cams["views"]) == T and len(cams["views"][0]) == V and len(cams["cond"]) == T
    c = Camera.from_dict(cams["views"][2][3])
    torch.testing.assert_close(c.extrinsics, t["view_extrinsics"][2, 3])
    torch.testing.assert_close(c.intrinsics, t["view_intrinsics"][2, 3])
    assert c.width == S
    # features = the projection of the stored PNGs, mean over all views
    f = 1
    imgs = torch.stack([torch.from_numpy(np.array(Image.open(d / "views" / f"f{f:03d}_v{v:03d}.png"))).permute(2, 0, 1)
                        for v in range(V)])
    views = [Camera.from_dict(x) for x in cams["views"][f]]
    again = voxel_features(coords[off[f]:off[f + 1], 1:], R, imgs, views, "color")
    torch.testing.assert_close(again.float(), feats[off[f]:off[f + 1]].float(), atol=1e-3, rtol=0)
    # coverage feature is sensible: voxels are seen (alpha mean > 0) from most views
    assert float(feats[off[f]:off[f + 1], 3].float().mean()) > 0.5


def test_voxel_centres_inside_stored_alpha(dataset):
    inside = []
    for row in read_manifest(dataset):
        d = dataset / "clips" / row["id"]
        t = load_file(str(d / "frames.safetensors"))
        cams = json.loads((d / "cameras.json").read_text())
        off = t["frame_offsets"]
        for f in range(T):
            ctr = voxel_centers(t["coords"][off[f]:off[f + 1], 1:], R)
            for v in range(V):
                cam = Camera.from_dict(cams["views"][f][v])
                alpha = np.array(Image.open(d / "views" / f"f{f:03d}_v{v:03d}.png"))[..., 3]
                uv, z = project_points(ctr, cam.extrinsics, cam.intrinsics)
                assert bool((z > 0).all())
                px = (uv * S).floor().long().clamp(0, S - 1)
                inside.append(torch.from_numpy(alpha)[px[:, 1], px[:, 0]] > 127)
    frac = float(torch.cat(inside).float().mean())
    assert frac >= 0.95, frac


def test_clip_dataset_and_collate(dataset):
    ds = ClipDataset(dataset, num_frames=2, stride=2, views_per_frame=3, seed=0)
    assert ds.skipped == [] and len(ds) == 2 * (T - 2)  # window starts 0, 1 per clip
    s = ds[1]
    assert s["id"] == clip_id(5, 0) and s["frame_indices"].tolist() == [1, 3]
    assert s["cond_frames"].dtype == torch.uint8 and s["cond_frames"].shape == (2, 48, 48, 4)
    assert s["coords"].dtype == torch.int32 and s["coords"].shape[1] == 4
    assert set(s["coords"][:, 0].tolist()) == {0, 1}
    assert s["feats"].dtype == torch.float32 and s["feats"].shape == (s["coords"].shape[0], 4)
    assert s["occupancy"].shape == (2, R, R, R) and s["occupancy"].dtype == torch.bool
    assert int(s["occupancy"].sum()) == s["coords"].shape[0]
    assert s["views"].shape == (2, 3, 4, S, S) and s["views"].dtype == torch.float32
    assert len(s["cameras"]) == 2 and len(s["cameras"][0]) == 3 and isinstance(s["cameras"][0][0], Camera)
    # the window's frames are the stored frames 1 and 3; views are the stored PNGs of the chosen indices
    full = load_file(str(dataset / "clips" / s["id"] / "frames.safetensors"))
    off = full["frame_offsets"]
    torch.testing.assert_close(s["coords"][s["coords"][:, 0] == 1, 1:], full["coords"][off[3]:off[4], 1:])
    v = int(s["view_indices"][1, 2])
    png = np.array(Image.open(dataset / "clips" / s["id"] / "views" / f"f003_v{v:03d}.png"))
    torch.testing.assert_close(s["views"][1, 2], torch.from_numpy(png).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(s["cameras"][1][2].extrinsics, full["view_extrinsics"][3, v])
    # reproducible with a seed
    assert torch.equal(ds[1]["view_indices"], s["view_indices"])
    # collate: b = sample * T + frame, a valid SparseTensor layout
    b = collate([ds[0], ds[1], ds[2]])
    assert b["num_frames"] == 2 and b["batch_size"] == 6 and len(b["ids"]) == 3
    assert b["coords"][:, 0].unique().tolist() == list(range(6))
    assert b["cond_frames"].shape == (3, 2, 48, 48, 4) and b["views"].shape == (3, 2, 3, 4, S, S)
    assert b["occupancy"].shape == (3, 2, R, R, R)
    n0 = ds[0]["coords"].shape[0]
    assert torch.equal(b["coords"][n0:n0 + 5, 0] - 2, ds[1]["coords"][:5, 0])
    st = SparseTensor(b["feats"], b["coords"], batch_size=b["batch_size"])
    assert st.batch_size == 6
    one = collate([ds[0]])
    assert torch.equal(one["coords"], ds[0]["coords"])
    # other window modes
    assert len(ClipDataset(dataset, 4, windows="first")) == 2
    rnd = ClipDataset(dataset, 3, windows="random", view_selection="first", views_per_frame=1)
    assert len(rnd) == 2 and rnd[0]["view_indices"].tolist() == [[0], [0], [0]]
    with pytest.raises(ValueError):
        ClipDataset(dataset, 2, windows="nope")
    # windows longer than the clips: every clip skipped
    assert len(ClipDataset(dataset, T + 1)) == 0


class PooledEncoder:
    """A stand-in for DINOv2 / EfficientNet: any callable straight RGBA [V,4,H,W] -> feature map [V,C,h,w]."""

    name = "pooled"

    def __call__(self, images):
        pm = torch.cat([images[:, :3] * images[:, 3:], images[:, 3:]], 1)
        grey = pm[:, :3].mean(1, keepdim=True)
        return torch.nn.functional.avg_pool2d(torch.cat([pm, grey, 1 - grey], 1), 4)  # [V, 6, H/4, W/4]


def test_extract_features_with_a_callable_encoder(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    enc = PooledEncoder()
    res = extract_features(root, enc)
    assert res["name"] == "pooled" and len(res["written"]) == 2 and not res["failed"]
    assert extract_features(root, enc)["skipped"] == res["written"]  # already there
    assert verify_dataset(root) == []
    row = read_manifest(root)[0]
    assert row["features"] == {"pooled": 6} and "feats_pooled.safetensors" in row["files"]
    d = root / "clips" / row["id"]
    base = load_file(str(d / "frames.safetensors"))
    extra = load_file(str(d / "feats_pooled.safetensors"))["feats"]
    assert extra.dtype == torch.float16 and extra.shape == (base["coords"].shape[0], 6)
    # the built-in colour encoder re-extracted from the PNGs equals the stored features
    extract_features(root, "color", name="color_again")
    again = load_file(str(d / "feats_color_again.safetensors"))["feats"]
    assert torch.equal(again, base["feats"])
    ds = ClipDataset(root, 2, feature="pooled", views_per_frame=0, load_cond=False)
    s = ds[0]
    assert s["feats"].shape == (s["coords"].shape[0], 6) and "cond_frames" not in s
    assert len(ClipDataset(dataset, 2, feature="pooled").clips) == 0  # not extracted there


def test_resume_skips_finished_clips(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    before = {r["id"]: r["files"] for r in read_manifest(root)}
    mtimes = {p: p.stat().st_mtime_ns for p in (root / "clips").rglob("*.safetensors")}
    # a stale temporary folder from a killed writer is cleaned up
    (root / "clips" / f".{clip_id(5, 2)}.tmp-dead").mkdir()
    summary = write_procedural_dataset(root, 3, workers=0, **KW)
    assert summary["skipped"] == [clip_id(5, 0), clip_id(5, 1)] and summary["written"] == [clip_id(5, 2)]
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # finished clips untouched
    rows = {r["id"]: r for r in read_manifest(root)}
    assert set(rows) == {clip_id(5, i) for i in range(3)}
    assert all(rows[k]["files"] == v for k, v in before.items())
    assert not list((root / "clips").glob(".*"))
    # a manifest line truncated by a crash is ignored, and the next append starts on a fresh line
    with open(root / "manifest.jsonl", "a") as f:
        f.write('{"id": "proc5_00')
    assert len(read_manifest(root)) == 3
    again = write_procedural_dataset(root, 3, workers=0, **KW)
    assert again["written"] == [] and len(again["skipped"]) == 3
    # other settings into the same folder are refused
    with pytest.raises(ValueError):
        write_procedural_dataset(root, 3, workers=0, **dict(KW, R=16))


def test_corrupted_clip_reported_and_skipped(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    bad = clip_id(5, 0)
    png = root / "clips" / bad / "views" / "f001_v002.png"
    data = bytearray(png.read_bytes())
    data[len(data) // 2] ^= 0xFF
    png.write_bytes(bytes(data))
    assert verify_dataset(root, full=True) == [(bad, "checksum mismatch for views/f001_v002.png")]
    assert verify_dataset(root, full=False) == []  # quick mode does not hash
    ds = ClipDataset(root, 2, verify="full")
    assert [c["id"] for c in ds.clips] == [clip_id(5, 1)] and ds.skipped[0][0] == bad
    # a truncated frames.safetensors is caught by the quick check too
    other = root / "clips" / clip_id(5, 1) / "frames.safetensors"
    other.write_bytes(other.read_bytes()[:100])
    ds = ClipDataset(root, 2)
    assert [x for x, _ in ds.skipped] == [clip_id(5, 1)] and len(ds.clips) == 1
    # resuming with verify_existing regenerates the broken clips, identical to the originals (deterministic)
    summary = write_procedural_dataset(root, 2, workers=0, verify_existing=True, **KW)
    assert sorted(summary["written"]) == [bad, clip_id(5, 1)]
    assert verify_dataset(root) == []
    assert {r["id"]: r["files"] for r in read_manifest(root)} == {r["id"]: r["files"] for r in read_manifest(dataset)}


def test_broken_generation_logged_and_skipped(tmp_path, monkeypatch):
    root = tmp_path / "data"
    small = dict(T=2, R=16, V=2, size=32, seed=9, num_points=1200)
    bad_seed = clip_seed(9, 1)
    real = dsmod.make_clip

    def flaky(seed, *a, **k):
        if seed == bad_seed:
            raise RuntimeError("synthetic failure")
        return real(seed, *a, **k)

    monkeypatch.setattr(dsmod, "make_clip", flaky)
    summary = write_procedural_dataset(root, 3, workers=0, **small)
    assert summary["written"] == [clip_id(9, 0), clip_id(9, 2)]
    assert [f["id"] for f in summary["failed"]] == [clip_id(9, 1)]
    assert "synthetic failure" in summary["failed"][0]["error"]
    errs = [json.loads(x) for x in (root / "errors.jsonl").read_text().splitlines()]
    assert errs[0]["id"] == clip_id(9, 1) and "Traceback" in errs[0]["traceback"]
    assert {r["id"] for r in read_manifest(root)} == {clip_id(9, 0), clip_id(9, 2)}
    assert not (root / "clips" / clip_id(9, 1)).exists() and not list((root / "clips").glob(".*"))
    monkeypatch.setattr(dsmod, "make_clip", real)
    summary = write_procedural_dataset(root, 3, workers=0, **small)
    assert summary["written"] == [clip_id(9, 1)] and len(summary["skipped"]) == 2


@pytest.mark.slow
def test_worker_processes_match_serial(tmp_path):
    small = dict(T=2, R=16, V=2, size=32, seed=3, num_points=1200, static_prob=0.5)
    a = write_procedural_dataset(tmp_path / "a", 3, workers=0, **small)
    b = write_procedural_dataset(tmp_path / "b", 3, workers=2, **small)
    assert sorted(a["written"]) == sorted(b["written"]) and not b["failed"]
    ra = {r["id"]: r for r in read_manifest(tmp_path / "a")}
    rb = {r["id"]: r for r in read_manifest(tmp_path / "b")}
    assert {k: v["files"] for k, v in ra.items()} == {k: v["files"] for k, v in rb.items()}
    for r in ra.values():  # the "static" flag matches the content
        t = load_file(str(tmp_path / "a" / "clips" / r["id"] / "frames.safetensors"))
        off = t["frame_offsets"]
        same = torch.equal(t["coords"][off[0]:off[1], 1:], t["coords"][off[1]:off[2], 1:])
        assert same or "static" not in r["flags"]
        assert set(r["flags"]) <= {"static", "orbit_cond"}


def test_cond_crop_frames_like_the_pipeline_and_moves_the_camera(dataset):
    from ss4d.pipeline.preprocess import AUG_SIZE_RATIO, preprocess_frames

    plain = ClipDataset(dataset, num_frames=T, windows="first", views_per_frame=0, load_views=False, seed=0)
    crop = ClipDataset(dataset, num_frames=T, windows="first", views_per_frame=0, load_views=False, seed=0,
                       cond_crop=True)
    for i in range(len(plain)):
        a, b = plain[i], crop[i]
        C = a["cond_frames"].shape[1]
        # the same pixels as the pipeline's preprocessing (premultiplied RGB and alpha)
        rgb, alpha, _ = preprocess_frames(a["cond_frames"].numpy(), size=C)
        x = b["cond_frames"].numpy().astype(np.float32) / 255
        assert np.array_equal((x[..., :3] * x[..., 3:4] * 255).astype(np.uint8), rgb)
        assert np.array_equal(b["cond_frames"][..., 3].numpy(), alpha)
        # the object's box over the window is centred with its longer side AUG_SIZE_RATIO times smaller than the frame
        ys, xs = np.nonzero(b["cond_frames"][..., 3].numpy().max(0) > 0)
        side = max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert abs(side * AUG_SIZE_RATIO - C) <= 0.15 * C  # LANCZOS spreads alpha > 0 by a pixel or two
        assert abs((xs.min() + xs.max() + 1) / 2 - C / 2) <= 2 or abs((ys.min() + ys.max() + 1) / 2 - C / 2) <= 2
        # voxels still land on the object's alpha with the moved camera
        for f in range(T):
            ctr = voxel_centers(b["coords"][b["coords"][:, 0] == f][:, 1:], R)
            uv, _ = b["cond_cameras"][f].project(ctr)
            px = (uv * C).floor().long().clamp(0, C - 1)
            hit = (b["cond_frames"][f, px[:, 1], px[:, 0], 3] > 127).float().mean()
            assert hit >= 0.9, float(hit)
