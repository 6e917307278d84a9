"""End-to-end `ss4d generate` on real clips with a tiny random-weight model (plumbing, not quality)."""
import json
import os
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from plyfile import PlyData
from pygltflib import GLTF2

from ss4d.cli import main
from ss4d.export.container import load_4d
from ss4d.models.tiny import build_tiny, write_model_folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_model")
    write_model_folder(d, build_tiny(0, occupancy_bias=-0.8))
    return d


def _decoded_frames(path):
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def _run(args):
    return main([str(a) for a in args])


def _check_outputs(out, n, renders=True):
    assert sorted(p.name for p in (out / "ply").iterdir()) == [f"frame_{t:03d}.ply" for t in range(n)]
    ply = PlyData.read(str(out / "ply" / "frame_000.ply"))
    names = {p.name for p in ply["vertex"].properties}
    assert {"x", "y", "z", "f_dc_0", "opacity", "scale_0", "rot_0"} <= names
    gs, meta, coords = load_4d(out / "result.ss4d")
    assert len(gs) == n and int(meta["frame_count"]) == n and len(coords) == n
    assert ply["vertex"].count == len(gs[0])
    assert np.allclose(np.stack([ply["vertex"][a] for a in "xyz"], 1), gs[0].get_xyz.numpy(), atol=1e-6)
    glb = GLTF2().load(str(out / "animation.glb"))
    assert glb.animations and len(glb.animations[0].channels) >= n
    assert (out / "viewer.html").read_text().count("<script>ss4dFrame(") == n
    if not renders:
        assert not (out / "renders").exists()
        return gs
    for name in ("orbit", "grid", "input_vs_output"):
        vids = list((out / "renders").glob(f"{name}.*"))
        assert vids, name
    assert _decoded_frames(next((out / "renders").glob("grid.*"))) == n
    assert _decoded_frames(next((out / "renders").glob("input_vs_output.*"))) == n
    return gs


def test_generate_rgba_clip(model_dir, shared, tmp_path):
    out = tmp_path / "rose"
    rc = _run(["generate", shared / "data/clips/rose", "-o", out, "--model", model_dir, "--frames", "4",
               "--steps", "2", "--cfg", "0", "--render-size", "32", "--quiet"])
    assert rc == 0
    gs = _check_outputs(out, 4)
    assert all(len(g) > 0 for g in gs)
    # deterministic: the same seed gives the same Gaussians
    out2 = tmp_path / "rose2"
    assert _run(["generate", shared / "data/clips/rose", "-o", out2, "--model", model_dir, "--frames", "4",
                 "--steps", "2", "--cfg", "0", "--no-renders", "--quiet"]) == 0
    gs2, _, _ = load_4d(out2 / "result.ss4d")
    assert all(torch.equal(a._xyz, b._xyz) for a, b in zip(gs, gs2))
    # --color-from-input on: same Gaussians, colours taken from the (red and green) rose
    out3 = tmp_path / "rose3"
    assert _run(["generate", shared / "data/clips/rose", "-o", out3, "--model", model_dir, "--frames", "4",
                 "--steps", "2", "--cfg", "0", "--no-renders", "--quiet", "--color-from-input", "on"]) == 0
    gs3, _, _ = load_4d(out3 / "result.ss4d")
    assert all(torch.equal(a._xyz, b._xyz) and torch.equal(a._opacity, b._opacity) for a, b in zip(gs, gs3))
    c = torch.cat([g.get_colors for g in gs3])
    assert not torch.allclose(c, torch.cat([g.get_colors for g in gs]), atol=0.05)
    assert c[:, 0].mean() > c[:, 2].mean() + 0.2   # a red rose: far more red than blue


def test_generate_mp4_with_matting_and_odd_frames(model_dir, shared, tmp_path):
    out = tmp_path / "mp4"
    rc = _run(["generate", shared / "data/videos/blooming_rose_fg.mp4", "-o", out, "--model", model_dir,
               "--frames", "3", "--steps", "1", "--cfg", "0", "--no-renders", "--quiet"])
    assert rc == 0
    _check_outputs(out, 3, renders=False)


@pytest.fixture
def no_compute(monkeypatch):
    """Fail the test if the clip is read or the model loaded: output checks must come first."""
    from ss4d.media import read
    from ss4d.pipeline import video_to_4d

    def boom(*a, **k):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(read, "read_frames", boom)
    monkeypatch.setattr(video_to_4d.VideoTo4DPipeline, "from_pretrained", classmethod(boom))


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ss4d: error:") and len(err.strip().splitlines()) == 1, err
    assert "overwrite=True" not in err and "Traceback" not in err
    return err


def test_existing_output_not_overwritten(model_dir, shared, tmp_path, capsys, no_compute):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    rc = _run(["generate", shared / "data/clips/rose", "-o", out, "--model", model_dir, "--frames", "2"])
    err = _one_error_line(capsys)
    assert rc == 2 and "already exists" in err and "--overwrite" in err and "-o" in err
    assert (out / "keep.txt").read_text() == "user data" and len(list(out.iterdir())) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


@pytest.mark.parametrize("case", ["under_a_file", "is_a_file", "read_only_fs"])
def test_unusable_output_refused_before_work(case, shared, tmp_path, capsys, no_compute):
    blocker = tmp_path / "somefile"
    blocker.write_text("not a folder")
    if case == "under_a_file":  # the parent is a file: nothing can be created there (even as root)
        out, words = blocker / "sub" / "out", "is a file, not a folder"
    elif case == "is_a_file":
        out, words = blocker, "is a file, not a folder"
    else:
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc to stand for a place where nothing can be created")
        out, words = "/proc/ss4d-test-output", "not writable"
    rc = _run(["generate", shared / "data/clips/rose", "-o", out, "--overwrite"])
    err = _one_error_line(capsys)
    assert rc == 2 and words in err and "-o/--output" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["somefile"] and blocker.read_text() == "not a folder"


def test_existing_empty_output_folder_accepted(model_dir, shared, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    rc = _run(["generate", shared / "data/clips/rose", "-o", out, "--model", model_dir, "--frames", "2",
               "--steps", "1", "--cfg", "0", "--no-renders", "--quiet"])
    assert rc == 0
    _check_outputs(out, 2, renders=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no temporary folders left


@pytest.mark.parametrize("kind", ["missing", "text", "one_frame", "transparent"])
def test_bad_input_exit_2_nothing_written(kind, model_dir, tmp_path, capsys):
    from PIL import Image

    if kind == "missing":
        src = tmp_path / "nope.mp4"
    elif kind == "text":
        src = tmp_path / "video.mp4"
        src.write_text("this is not a video")
    elif kind == "one_frame":
        src = tmp_path / "one"
        src.mkdir()
        Image.new("RGBA", (32, 32), (255, 0, 0, 255)).save(src / "0.png")
    else:
        src = tmp_path / "clear"
        src.mkdir()
        for i in range(3):
            Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(src / f"{i}.png")
    out = tmp_path / "out"
    rc = _run(["generate", src, "-o", out, "--model", model_dir])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("ss4d: error:") and len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_bad_model_folder(tmp_path, shared, capsys):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "pipeline.json").write_text(json.dumps({"args": {"models": {}}}))
    rc = _run(["generate", shared / "data/clips/rose", "-o", tmp_path / "o", "--model", bad])
    assert rc == 2 and "lacks" in capsys.readouterr().err


def test_render_and_export_saved_result(model_dir, shared, tmp_path, capsys):
    out = tmp_path / "r"
    assert _run(["generate", shared / "data/clips/rose", "-o", out, "--model", model_dir, "--frames", "2",
                 "--steps", "1", "--cfg", "0", "--no-renders", "--quiet"]) == 0
    assert _run(["render", out / "result.ss4d", "-o", tmp_path / "renders", "--size", "32"]) == 0
    assert _decoded_frames(next((tmp_path / "renders").glob("grid.*"))) == 2
    assert _run(["render", tmp_path / "nothing.ss4d", "-o", tmp_path / "renders"]) == 2  # checked before reading
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    assert _run(["render", out / "result.ss4d", "-o", tmp_path / "empty", "--size", "32"]) == 0
    assert list((tmp_path / "empty").glob("grid.*"))
    assert _run(["export", out / "result.ss4d", "--format", "ply", "-o", tmp_path / "exp"]) == 0
    assert len(list((tmp_path / "exp" / "ply").glob("*.ply"))) == 2
    assert _run(["export", out / "result.ss4d", "--format", "glb", "-o", tmp_path / "exp"]) == 0
    assert (tmp_path / "exp.glb").exists()
    # existing outputs: refused without --overwrite, before the .ss4d is read, with the CLI's flag named
    for fmt in ("ply", "glb"):
        assert _run(["export", tmp_path / "nothing.ss4d", "--format", fmt, "-o", tmp_path / "exp"]) == 2
        err = capsys.readouterr().err
        assert "already exists" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    # y-up PLYs with SH degree 3 padding, re-read: x, z, -y and the 45 f_rest_* the INRIA loader expects
    assert _run(["export", out / "result.ss4d", "--format", "ply", "-o", tmp_path / "yup", "--up", "y",
                 "--sh-degree", "3"]) == 0
    gs, _, _ = load_4d(out / "result.ss4d")
    v = PlyData.read(str(tmp_path / "yup" / "ply" / "frame_001.ply"))["vertex"]
    names = [p.name for p in v.properties]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)] and names[54] == "opacity"
    assert all(np.all(np.asarray(v[f"f_rest_{i}"]) == 0) for i in range(45))
    xyz = gs[1].get_xyz.numpy()
    got = np.stack([np.asarray(v[k]) for k in "xyz"], 1)
    np.testing.assert_allclose(got, np.stack([xyz[:, 0], xyz[:, 2], -xyz[:, 1]], 1), atol=1e-6)
    assert _run(["export", out / "result.ss4d", "--format", "glb", "-o", tmp_path / "g2", "--up", "y"]) == 2
    assert "--format ply only" in capsys.readouterr().err and not (tmp_path / "g2.glb").exists()


def test_python_m_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ss4d", "generate", str(tmp_path / "missing"), "-o",
                        str(tmp_path / "o")], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 2 and "error" in r.stderr
