"""Shared helpers of the ss4d.train tests: micro model specs (32-64 channels) and configs on synthetic clips.

(Named test_train_* so it belongs to the training test suite; it also checks the synthetic data and batch format.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

COND = {"tiny": "image_cond_model", "args": {"image_size": 32, "patch_size": 8, "channels": 32, "num_blocks": 1,
                                             "num_heads": 2}}
SS_ENC = {"tiny": "sparse_structure_encoder", "args": {"channels": [8, 16, 32]}}
SS_DEC = {"tiny": "sparse_structure_decoder", "args": {"channels": [32, 16, 8]}}
SLAT_ENC = {"tiny": "slat_encoder", "args": {"in_channels": 16, "model_channels": 32, "num_blocks": 1,
                                             "num_heads": 2}}
MODELS = {
    "ss_vae": {"encoder": SS_ENC, "decoder": SS_DEC},
    "slat_vae": {"encoder": SLAT_ENC,
                 "decoder": {"tiny": "slat_decoder_gs", "args": {
                     "model_channels": 32, "num_blocks": 1, "num_heads": 2,
                     "representation_config": {"num_gaussians": 4, "scaling_bias": 0.03}}}},
    "ss_flow": {"flow": {"tiny": "sparse_structure_flow_model", "args": {
        "resolution": 4, "patch_size": 1, "model_channels": 32, "cond_channels": 32, "num_blocks": 2,
        "num_heads": 2}}, "conditioner": COND, "ss_encoder": SS_ENC},
    "slat_flow": {"flow": {"tiny": "slat_flow_model", "args": {
        "resolution": 16, "model_channels": 32, "cond_channels": 32, "num_blocks": 1, "num_heads": 2,
        "io_block_channels": [16], "io_block_channels_t": [32], "num_io_res_blocks": 1,
        "num_io_res4d_blocks": 1}}, "conditioner": COND, "slat_encoder": SLAT_ENC},
}
DATA = {"type": "synthetic", "num_clips": 4, "num_frames": 2, "resolution": 16, "feat_channels": 16,
        "image_size": 32, "num_views": 2, "view_size": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """The training tests run single-threaded (2 shared cores: oversubscribed OpenMP is 10-20x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def config(stage: str, out_dir, **kw) -> dict:
    cfg = {"stage": stage, "models": json.loads(json.dumps(MODELS[stage])), "data": dict(DATA),
           "out_dir": str(out_dir), "steps": 4, "batch_size": 2, "lr": 1e-3, "ema_rate": 0.99, "log_every": 1,
           "ckpt_every": 2, "keep_ckpts": 2, "progress": False, "num_threads": 1}
    cfg.update(kw)
    return cfg


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return e


def run_cli(cfg_path, *args, timeout=240, nproc=None):
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", "0", "-m", "ss4d.train", str(cfg_path), *args]
    else:
        cmd = [sys.executable, "-m", "ss4d.train", str(cfg_path), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_synthetic_batch_format():
    from ss4d.train.loop import SyntheticClips, collate

    ds = SyntheticClips(num_clips=3, num_frames=2, resolution=8, feat_channels=4, image_size=16, num_views=2,
                        view_size=8)
    b = collate([ds[0], ds[2]])
    T = 2
    assert b["num_frames"] == T and b["num_clips"] == 2
    assert b["cond_frames"].shape == (4, 3, 16, 16) and 0 <= b["cond_frames"].min() and b["cond_frames"].max() <= 1
    assert b["occupancy"].dtype == torch.bool and b["occupancy"].shape == (4, 8, 8, 8)
    assert b["coords"].dtype == torch.int32 and b["coords"].shape[1] == 4
    assert b["feats"].shape == (b["coords"].shape[0], 4)
    assert b["views"].shape == (4, 2, 4, 8, 8) and len(b["cameras"]) == 4 and len(b["cameras"][0]) == 2
    # b = clip * T + frame, sorted; every coord is an occupied voxel of its frame
    assert (b["coords"][1:, 0] >= b["coords"][:-1, 0]).all()
    c = b["coords"].long()
    assert b["occupancy"][c[:, 0], c[:, 1], c[:, 2], c[:, 3]].all()
    assert int(b["occupancy"].sum()) == c.shape[0]
    # deterministic
    assert torch.equal(ds[1]["feats"], SyntheticClips(num_clips=3, num_frames=2, resolution=8, feat_channels=4,
                                                      image_size=16, num_views=2, view_size=8)[1]["feats"])


def test_channels_last_rgba_conditioning_frames_are_accepted():
    from ss4d.train.loop import normalize_clip

    rgba = torch.zeros(2, 5, 6, 4, dtype=torch.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 51  # alpha 0.2
    out = normalize_clip({"cond_frames": rgba})["cond_frames"]
    assert out.shape == (2, 3, 5, 6) and out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.full((2, 5, 6), 0.2))
    assert out[:, 1:].abs().max() == 0
    chw = torch.rand(2, 3, 5, 6)
    assert normalize_clip({"cond_frames": chw})["cond_frames"] is chw
