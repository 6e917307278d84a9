"""`VideoTo4DPipeline.generate`: the one job behind `ss4d generate`, the Python API and `ss4d evaluate` (frame
selection, long-clip windows, post-steps named in pipeline.json)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ss4d.models.checkpoint import CheckpointError
from ss4d.models.tiny import build_tiny, write_model_folder
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline, read_post_steps


def _clip(T: int, size: int = 64) -> np.ndarray:
    """A disc moving right, its colour changing with the frame index (RGBA)."""
    yy, xx = np.mgrid[:size, :size]
    frames = np.zeros((T, size, size, 4), np.uint8)
    for t in range(T):
        m = ((xx - 20 - 2 * t) ** 2 + (yy - 30) ** 2) < 12 ** 2
        frames[t][m] = (40 + 20 * t, 200 - 15 * t, 90, 255)
    return frames


def _xyz(res) -> list[torch.Tensor]:
    return [g.get_xyz for g in res.gaussians]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    torch.set_num_threads(1)
    folder = write_model_folder(tmp_path_factory.mktemp("m") / "m", build_tiny(0), num_frames=4)
    return VideoTo4DPipeline.from_pretrained(folder)


def test_long_clip_is_windows_stitched_by_hand(pipe):
    """10 frames with a 4-frame model: windows [0,4) [3,7) [6,10) (overlap 1), each frame from the window where it is
    most central, each window exactly a separate call on its frames."""
    clip = _clip(10)
    res = pipe.generate(clip, seed=3, steps=2, fps=10.0, num_frames=10)
    assert res.num_frames == 10 and res.meta["windows"] == [[0, 4], [3, 7], [6, 10]]
    assert res.fps == pytest.approx(10.0)
    parts = [pipe(clip[a:b], seed=3, steps=2) for a, b in res.meta["windows"]]
    # centrality min(t - start, stop - 1 - t), ties to the earlier window, worked out by hand:
    # t=3: window 0 min(3, 0) = 0 ties window 1 min(0, 3) = 0 -> window 0; t=6 likewise -> window 1
    source = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    for t, (w, i) in enumerate(source):
        assert torch.equal(_xyz(res)[t], _xyz(parts[w])[i]), f"frame {t}"
        assert np.array_equal(res.frames[t], parts[w].frames[i])
    assert res.meta["num_voxels"] == [len(c) for c in res.coords]


def test_frame_selection_and_rate(pipe):
    clip = _clip(9)
    res = pipe.generate(clip, seed=1, steps=2, num_frames=3, fps=9.0)
    direct = pipe(clip[[0, 4, 8]], seed=1, steps=2)  # uniform over the clip, both ends included
    assert res.num_frames == 3 and res.fps == pytest.approx(3.0)
    for a, b in zip(_xyz(res), _xyz(direct)):
        assert torch.equal(a, b)
    strided = pipe.generate(clip, seed=1, steps=2, stride=4, fps=None)
    assert strided.num_frames == 3 and strided.fps == 16.0  # unknown input rate: plays at 16
    # default: at most the model's frame count, spread over the clip
    assert pipe.generate(clip, seed=1, steps=2).num_frames == 4


def test_cli_runs_the_same_job_as_the_api(pipe, tmp_path):
    from ss4d.cli import main
    from ss4d.export.container import load_4d

    clip = _clip(6)
    d = tmp_path / "clip"
    d.mkdir()
    for i, f in enumerate(clip):
        Image.fromarray(f, "RGBA").save(d / f"{i}.png")
    out = tmp_path / "out"
    assert main(["generate", str(d), "-o", str(out), "--model", str(pipe.config.root), "--seed", "5", "--steps",
                 "2", "--frames", "6", "--no-renders", "--quiet", "--color-from-input", "off"]) == 0
    gaussians, _meta, _coords = load_4d(out / "result.ss4d")
    api = pipe.generate(clip, seed=5, steps=2, num_frames=6, color_from_input=False)
    assert len(gaussians) == 6 and api.meta["windows"]
    for g, a in zip(gaussians, api.gaussians):
        assert torch.equal(g.get_xyz, a.get_xyz) and torch.equal(g._features_dc, a._features_dc)


def test_post_steps_are_read_in_order_and_checked():
    assert read_post_steps({}) == []
    assert read_post_steps({"color_from_input": True}) == [{"name": "color_from_input", "strength": 1.0}]
    assert read_post_steps({"color_from_input": 0.5}) == [{"name": "color_from_input", "strength": 0.5}]
    assert read_post_steps({"post_steps": ["color_from_input"]}) == [{"name": "color_from_input", "strength": 1.0}]
    with pytest.raises(CheckpointError, match="unknown post-step 'carve'"):
        read_post_steps({"post_steps": ["carve"]})
    with pytest.raises(CheckpointError, match="listed twice"):
        read_post_steps({"post_steps": ["color_from_input", "color_from_input"]})
    with pytest.raises(CheckpointError, match="not both"):
        read_post_steps({"post_steps": [], "color_from_input": True})
    with pytest.raises(CheckpointError, match="strength"):
        read_post_steps({"post_steps": [{"name": "color_from_input", "strength": 2}]})


def test_post_step_from_pipeline_json_runs(tmp_path):
    torch.set_num_threads(1)
    folder = write_model_folder(tmp_path / "m", build_tiny(0), num_frames=4,
                                extra={"post_steps": [{"name": "color_from_input", "strength": 1.0}]})
    p = VideoTo4DPipeline.from_pretrained(folder)
    assert p.color_from_input == 1.0
    res = p(_clip(4), seed=0, steps=2)
    assert res.meta["post_steps"] == ["color_from_input"] and "color_from_input" in res.timings
    off = p(_clip(4), seed=0, steps=2, color_from_input=False)
    assert off.meta["post_steps"] == [] and "color_from_input" not in off.timings
