"""Weight initialisation (official zero-inits, TRELLIS 3D -> 4D transfer) and latent preparation helpers."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from test_train_helpers import one_thread  # noqa: F401 (autouse fixture)

from ss4d.models.checkpoint import CheckpointError
from ss4d.models.registry import build
from ss4d.models.tiny import TINY
from ss4d.sparse.tensor import SparseTensor
from ss4d.train import encode_slat, encode_ss_latents, init_from_trellis, official_init, slat_normalization_stats
from ss4d.train.loop import SyntheticClips, collate

FLOW = {"resolution": 16, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 32,
        "num_blocks": 2, "num_heads": 2, "patch_size": 2, "num_io_res_blocks": 2, "io_block_channels": [16]}


def _zero(t):
    return bool(t.abs().max() == 0)


def test_official_init_zeroes_where_trellis_does():
    torch.manual_seed(0)
    m = official_init(build("SLatFlow4DModel", {**FLOW, "io_block_channels_t": [32]}))
    sd = m.state_dict()
    for k, v in sd.items():
        if k.startswith("blocks.") and "adaLN_modulation.1" in k:
            assert _zero(v), k
        if ".conv2." in k:
            assert _zero(v), k
    assert _zero(sd["out_layer.weight"]) and _zero(sd["out_layer.bias"])
    assert not _zero(sd["blocks.0.self_attn.to_qkv.weight"]) and _zero(sd["blocks.0.self_attn.to_qkv.bias"])
    assert sd["t_embedder.mlp.0.weight"].std().item() == pytest.approx(0.02, rel=0.2)
    assert not _zero(sd["input_blocks_t.0.conv1.conv.weight"])
    # xavier-uniform Linear weights: bound sqrt(6 / (fan_in + fan_out))
    w = sd["blocks.0.mlp.mlp.0.weight"]
    assert w.abs().max() <= (6 / sum(w.shape)) ** 0.5 + 1e-6
    # dense flow and the Gaussian decoder
    f = official_init(build(*TINY["sparse_structure_flow_model"]))
    assert _zero(f.out_layer.weight) and all(_zero(b.adaLN_modulation[-1].weight) for b in f.blocks)
    d = official_init(build(*TINY["slat_decoder_gs"]))
    assert _zero(d.out_layer.weight) and not _zero(d.blocks[0].attn.to_qkv.weight)


def test_init_from_trellis_3d_checkpoint(tmp_path):
    torch.manual_seed(1)
    m3 = build("SLatFlowModel", {**FLOW, "pe_mode": "ape"})  # TRELLIS layout (3D)
    for p in m3.parameters():
        torch.nn.init.normal_(p)
    p3 = tmp_path / "slat_flow_img.safetensors"
    save_file({k: v.contiguous().half() for k, v in m3.state_dict().items()}, str(p3))  # fp16 as released
    m4 = official_init(build("SLatFlow4DModel", {**FLOW, "io_block_channels_t": [32]}))
    before = {k: v.clone() for k, v in m4.state_dict().items()}
    rep = init_from_trellis(m4, p3)
    sd4 = m4.state_dict()
    assert set(rep["kept_init"]) == {k for k in sd4 if k.startswith(("input_blocks_t.", "out_blocks_t."))}
    assert rep["kept_init"] and not rep["shape_mismatch"]
    for k, v in m3.state_dict().items():
        torch.testing.assert_close(sd4[k], v.half().float())
    for k in rep["kept_init"]:
        assert torch.equal(sd4[k], before[k])
    # dense SS flow: identical key sets, every tensor copied
    s3 = build("SparseStructureFlowModel", TINY["sparse_structure_flow_model"][1] | {"pe_mode": "ape",
                                                                                   "expand_self_attn": False,
                                                                                   "window_size": None})
    s4 = build(*TINY["sparse_structure_flow_model"])
    rep = init_from_trellis(s4, s3.state_dict())
    assert not rep["kept_init"] and len(rep["copied"]) == len(s4.state_dict())


def test_init_from_trellis_errors():
    m4 = build("SLatFlow4DModel", {**FLOW, "io_block_channels_t": [32]})
    sd = {k: v.clone() for k, v in m4.state_dict().items() if not k.startswith(("input_blocks_t", "out_blocks_t"))}
    bad = dict(sd)
    bad.pop("blocks.0.mlp.mlp.0.weight")
    with pytest.raises(CheckpointError, match="missing from the source.*blocks.0.mlp.mlp.0.weight"):
        init_from_trellis(m4, bad)
    bad = dict(sd, extra_tensor=torch.zeros(1))
    with pytest.raises(CheckpointError, match="unexpected source keys: extra_tensor"):
        init_from_trellis(m4, bad)
    bad = dict(sd)
    bad["out_layer.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match="shape mismatches: out_layer.weight"):
        init_from_trellis(m4, bad)
    with pytest.raises(CheckpointError, match="not found"):
        init_from_trellis(m4, "/nonexistent/ckpt.safetensors")


def test_latent_helpers():
    torch.manual_seed(0)
    ds = SyntheticClips(num_clips=2, num_frames=2, resolution=16, feat_channels=16, image_size=16, num_views=1,
                        view_size=8)
    b = collate([ds[0], ds[1]])
    enc = build("SparseStructureEncoder", {**TINY["sparse_structure_encoder"][1], "channels": [8, 16, 32]}).eval()
    z = encode_ss_latents(enc, b["occupancy"], chunk=3)
    _, mean, _ = enc(b["occupancy"].float()[:, None], sample_posterior=False, return_raw=True)
    assert z.shape == (4, 8, 4, 4, 4)
    torch.testing.assert_close(z, mean)
    senc = build("SLatEncoder", {**TINY["slat_encoder"][1], "in_channels": 16, "model_channels": 32,
                                 "num_blocks": 1, "num_heads": 2}).eval()
    s = encode_slat(senc, b["coords"], b["feats"], 2, 4)
    _, m2, _ = senc(SparseTensor(b["feats"], b["coords"], 4), num_frames=2, sample_posterior=False, return_raw=True)
    torch.testing.assert_close(s.feats, m2)
    assert torch.equal(s.coords, b["coords"])
    clips = [torch.randn(50, 8) * 2 + 1, torch.randn(30, 8) - 1]
    st = slat_normalization_stats(clips)
    mean = torch.stack([c.mean(0) for c in clips]).mean(0)
    ex2 = torch.stack([c.square().mean(0) for c in clips]).mean(0)
    torch.testing.assert_close(torch.tensor(st["mean"]), mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(st["std"]), (ex2 - mean**2).sqrt(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        slat_normalization_stats([])


def test_role_init_with_changed_condition_width(tmp_path):
    """models.<role>.init = {"path", "strict_shapes": false}: a flow re-initialised for another conditioning encoder
    keeps every tensor whose shape still fits and the fresh init of the cross-attention key/value projections."""
    from ss4d.train.loop import ConfigError, build_role

    torch.manual_seed(0)
    old = build(*TINY["slat_flow_model"])
    p = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(p))
    spec = {"tiny": "slat_flow_model", "args": {"cond_channels": 112}}
    new, _ = build_role("flow", {**spec, "init": {"path": str(p), "strict_shapes": False}})
    sd_old, sd_new = old.state_dict(), new.state_dict()
    changed = [k for k in sd_new if sd_new[k].shape != sd_old[k].shape]
    assert changed and all("cross_attn" in k for k in changed)
    assert all(torch.equal(sd_new[k], sd_old[k]) for k in sd_new if k not in changed)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        build_role("flow", {**spec, "init": str(p)})
    with pytest.raises(ConfigError, match="init takes"):
        build_role("flow", {**spec, "init": {"file": str(p)}})
