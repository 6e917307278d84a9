"""DINOv2 ViT with registers + SS4D conditioner, against the official dinov2_tiny vectors; weight loader."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ss4d.models.image_encoders import DinoV2, DinoV2Conditioner, load_dinov2_weights, vit_large, vit_small
from ss4d.models.image_encoders.dinov2 import DINOV2_VITL14_REG_ARGS

TOL = dict(atol=1e-5, rtol=1e-5)
TINY = dict(img_size=56, patch_size=14, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4, init_values=1.0,
            ffn_layer="mlp", block_chunks=0, num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0)


@pytest.fixture(scope="module")
def case(shared):
    d = shared / "vectors" / "dinov2_tiny"
    if not d.is_dir():
        pytest.skip("dinov2_tiny vectors missing")
    cfg = json.loads((d / "config.json").read_text())
    sd, inp, ref = (load_file(str(d / f"{n}.safetensors")) for n in ("model", "inputs", "outputs"))
    model = DinoV2(**cfg["model"]["args"]).eval()
    model.load_state_dict(sd, strict=True)
    return model, inp, ref


def test_forward_features_vectors(case):
    # official call: ret = model(x_normalized, is_training=True)
    model, inp, ref = case
    with torch.no_grad():
        ret = model(inp["x_normalized"], is_training=True)
    for k in ("x_prenorm", "x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens"):
        torch.testing.assert_close(ret[k], ref[k], **TOL, msg=lambda m, k=k: f"{k}: {m}")


def test_conditioner_vectors(case):
    # SS4D: cond = F.layer_norm(x_prenorm, [C]) of the ImageNet-normalised image
    model, inp, ref = case
    cond_model = DinoV2Conditioner(model)
    torch.testing.assert_close(cond_model.preprocess(inp["image"]), inp["x_normalized"], **TOL)
    cond = cond_model(inp["image"])
    assert cond.shape == ref["cond"].shape == (2, cond_model.num_tokens, cond_model.out_channels)
    torch.testing.assert_close(cond, ref["cond"], **TOL)
    # frame chunking does not change the result
    cond_model.batch_size = 1
    torch.testing.assert_close(cond_model(inp["image"]), ref["cond"], **TOL)


def test_full_size_manifest(shared):
    path = shared / "vectors" / "state_dict_manifests.json"
    if not path.is_file():
        pytest.skip("state_dict_manifests.json missing")
    entry = json.loads(path.read_text())["models"]["dinov2_vitl14_reg"]
    assert entry["args"] == DINOV2_VITL14_REG_ARGS
    with torch.device("meta"):
        model = vit_large(**entry["args"])
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(k, shape) for k, shape, _ in entry["keys"]]
    assert len(got) == entry["num_tensors"] == 344
    assert sum(p.numel() for p in model.parameters()) == entry["num_params_excluding_buffers"]


def test_factory_official_defaults():
    with torch.device("meta"):
        m = vit_small()
    # DinoVisionTransformer defaults: 224 px, patch 16, block_chunks=1 (keys blocks.0.{i}), no LayerScale/registers
    keys = m.state_dict().keys()
    assert m.pos_embed.shape == (1, 197, 384)
    assert "blocks.0.11.attn.qkv.weight" in keys and "register_tokens" not in keys
    assert not any(".ls1." in k for k in keys)
    assert m.interpolate_offset == 0.1 and not m.interpolate_antialias


def _tiny(seed=0, **kw):
    torch.manual_seed(seed)
    m = DinoV2(**{**TINY, **kw}).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_pos_embed_interpolation():
    m = _tiny()
    x = torch.zeros(1, 17, 64)
    assert m.interpolate_pos_encoding(x, 56, 56) is m.pos_embed  # native size (518 in SS4D): untouched
    with torch.no_grad():
        m.pos_embed[:, 1:] = 0.7  # a constant grid stays constant under (antialiased) bicubic resampling
        pe = m.interpolate_pos_encoding(torch.zeros(1, 1 + 5 * 6, 64), 70, 84)
    assert pe.shape == (1, 31, 64)
    torch.testing.assert_close(pe[:, 1:], torch.full((1, 30, 64), 0.7), atol=1e-5, rtol=0)
    m2 = _tiny(interpolate_offset=0.1, interpolate_antialias=False)
    with torch.no_grad():
        out = m2(torch.randn(2, 3, 98, 42), is_training=True)
    assert out["x_prenorm"].shape == (2, 1 + 4 + 7 * 3, 64)
    assert out["x_norm_patchtokens"].shape == (2, 21, 64)


def test_conditioner_resize_and_bf16():
    m = _tiny()
    c = DinoV2Conditioner(m)
    img = torch.rand(3, 3, 80, 80)
    cond = c(img)
    assert cond.shape == (3, 21, 64) and cond.dtype == torch.float32
    torch.testing.assert_close(cond.mean(-1), torch.zeros(3, 21), atol=1e-5, rtol=0)
    c_bf16 = DinoV2Conditioner(m, autocast_dtype=torch.bfloat16)
    cond16 = c_bf16(img)
    assert cond16.dtype == torch.float32
    assert (cond16 - cond).abs().mean() < 0.1


def test_loader_roundtrip_official_layout(tmp_path):
    src = _tiny(seed=1)
    x = torch.randn(1, 3, 56, 56)
    path = tmp_path / "dinov2_tiny_reg4_pretrain.pth"
    torch.save(src.state_dict(), path)  # official hub layout: a flat state dict
    dst = load_dinov2_weights(_tiny(seed=2), path)
    with torch.no_grad():
        torch.testing.assert_close(dst(x, is_training=True)["x_prenorm"], src(x, is_training=True)["x_prenorm"])
    # DDP / training-checkpoint prefixes are stripped
    torch.save({"backbone." + k: v for k, v in src.state_dict().items()}, path)
    load_dinov2_weights(_tiny(seed=2), path)
    torch.save({"module." + k: v for k, v in src.state_dict().items()}, path)
    load_dinov2_weights(_tiny(seed=2), path)
    # safetensors
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    dst = load_dinov2_weights(_tiny(seed=3), st)
    torch.testing.assert_close(dst.pos_embed, src.pos_embed)


def test_loader_errors(tmp_path):
    src = _tiny()
    sd = src.state_dict()
    bad = tmp_path / "bad.pth"
    # missing + unexpected + shape mismatch are all named, with the file
    broken = dict(sd)
    broken.pop("blocks.1.ls2.gamma")
    broken["head.weight"] = torch.zeros(3)
    broken["pos_embed"] = torch.zeros(1, 5, 64)
    torch.save(broken, bad)
    with pytest.raises(RuntimeError) as e:
        load_dinov2_weights(_tiny(), bad)
    msg = str(e.value)
    assert "blocks.1.ls2.gamma" in msg and "head.weight" in msg and "pos_embed" in msg and str(bad) in msg
    # corrupt / truncated file
    good = tmp_path / "good.pth"
    torch.save(sd, good)
    data = good.read_bytes()
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="corrupt"):
        load_dinov2_weights(_tiny(), corrupt)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(RuntimeError, match="garbage.safetensors"):
        load_dinov2_weights(_tiny(), garbage)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_dinov2_weights(_tiny(), tmp_path / "nope.pth")


def test_conditioner_builds_from_weights_file(tmp_path, monkeypatch):
    # the default conditioner is ViT-L/14-reg4 (meta-built, then filled from the file); check with a tiny stand-in
    import ss4d.models.image_encoders.dinov2 as dinov2_mod

    src = _tiny(seed=4)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    monkeypatch.setattr(dinov2_mod, "vit_large", lambda **kw: DinoV2(**TINY))
    c = dinov2_mod.DinoV2Conditioner(weights=path)
    assert c.image_size == 56
    torch.testing.assert_close(c.model.cls_token, src.cls_token)
    img = torch.rand(1, 3, 56, 56)
    torch.testing.assert_close(c(img), DinoV2Conditioner(src)(img))
