"""pipeline.json `temporal_noise`: "shared" starts every frame from the same noise (latent flow: per voxel position)."""
import pytest
import torch

from ss4d.models.checkpoint import CheckpointError
from ss4d.models.tiny import build_tiny, write_model_folder
from ss4d.pipeline.video_to_4d import VideoTo4DPipeline


def _pipe(tmp_path, mode):
    extra = {} if mode is None else {"temporal_noise": mode}
    return VideoTo4DPipeline.from_pretrained(write_model_folder(tmp_path / str(mode), build_tiny(0), extra=extra))


def _captured_noise(pipe, which, *args):
    seen = {}
    sampler = pipe.ss_sampler if which == "ss" else pipe.slat_sampler

    def fake(model, noise, cond, neg, **kw):
        seen["noise"] = noise
        return noise
    sampler.sample = fake
    (pipe.sample_structure if which == "ss" else pipe.sample_latents)(*args)
    return seen["noise"]


@pytest.mark.parametrize("mode", [None, "independent", "shared"])
def test_structure_and_latent_noise(tmp_path, mode):
    torch.set_num_threads(1)
    p = _pipe(tmp_path, mode)
    T = 3
    cond = torch.zeros(T, 4, 8)  # not looked at: the sampler is replaced by one that returns its noise
    ss = _captured_noise(p, "ss", cond, torch.Generator().manual_seed(0))
    same = all(torch.equal(ss[0], ss[t]) for t in range(1, T))
    assert same == (mode == "shared")
    # two frames sharing voxel (1, 2, 3), frame 1 also has (4, 4, 4)
    coords = torch.tensor([[0, 1, 2, 3], [1, 1, 2, 3], [1, 4, 4, 4], [2, 0, 0, 0]], dtype=torch.int32)
    lat = _captured_noise(p, "slat", cond, coords, torch.Generator().manual_seed(0)).feats
    assert torch.equal(lat[0], lat[1]) == (mode == "shared")
    assert not torch.equal(lat[1], lat[2])


def test_unknown_mode_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="temporal_noise"):
        _pipe(tmp_path, "sometimes")
