"""Sparse-structure VAE (TRELLIS SparseStructureEncoder / SparseStructureDecoder) against the official vectors."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ss4d.models.ss_vae import SparseStructureDecoder, SparseStructureEncoder, pixel_shuffle_3d

TOL = dict(atol=1e-5, rtol=1e-5)
CLASSES = {"SparseStructureEncoder": SparseStructureEncoder, "SparseStructureDecoder": SparseStructureDecoder}


def _load_case(shared, sub):
    d = shared / "vectors" / "ss_vae" / sub
    if not d.is_dir():
        pytest.skip(f"vector case {d} missing")
    cfg = json.loads((d / "config.json").read_text())
    sd, inp, ref = (load_file(str(d / f"{n}.safetensors")) for n in ("model", "inputs", "outputs"))
    model = CLASSES[cfg["model"]["class"]](**cfg["model"]["args"]).eval()
    model.load_state_dict(sd, strict=True)
    return model, inp, ref


def _hook_intermediates(model, ref):
    """`inter.<name>` outputs are forward-hook outputs of the sub-module `<name>` (e.g. `blocks.7`)."""
    got = {}
    for key in ref:
        if key.startswith("inter."):
            name = key[len("inter."):]
            model.get_submodule(name).register_forward_hook(
                lambda _m, _i, out, key=key: got.__setitem__(key, out.detach().clone())
            )
    return got


def test_encoder_vectors(shared):
    # official call: mean_z, mean, logvar = model(x, sample_posterior=False, return_raw=True)
    model, inp, ref = _load_case(shared, "encoder")
    got = _hook_intermediates(model, ref)
    with torch.no_grad():
        z, mean, logvar = model(inp["x"], sample_posterior=False, return_raw=True)
    got.update(z=z, mean=mean, logvar=logvar)
    assert set(got) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, **TOL, msg=lambda m, k=k: f"{k}: {m}")
    assert torch.equal(z, mean)


def test_decoder_vectors(shared):
    # official call: logits = model(z)
    model, inp, ref = _load_case(shared, "decoder")
    got = _hook_intermediates(model, ref)
    with torch.no_grad():
        got["logits"] = model(inp["z"])
    assert set(got) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, **TOL, msg=lambda m, k=k: f"{k}: {m}")


@pytest.mark.parametrize(
    "name",
    ["TRELLIS-image-large/ss_dec_conv3d_16l8_fp16", "TRELLIS/ss_enc_conv3d_16l8_fp16", "SS4D/ss_dec_conv3d_16l8_fp16"],
)
def test_full_size_manifest(shared, name):
    path = shared / "vectors" / "state_dict_manifests.json"
    if not path.is_file():
        pytest.skip("state_dict_manifests.json missing")
    entry = json.loads(path.read_text())["models"][name]
    with torch.device("meta"):
        model = CLASSES[entry["class"]](**entry["args"])
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == [(k, shape) for k, shape, _ in entry["keys"]]
    assert sum(p.numel() for p in model.parameters()) == entry["num_params_excluding_buffers"]


def test_pixel_shuffle_channel_layout():
    # channel c*8 + 4i + 2j + k of the conv output goes to sub-voxel (i, j, k) of output channel c
    b, c, r = 1, 3, 2
    x = torch.arange(b * c * 8 * r**3, dtype=torch.float32).reshape(b, c * 8, r, r, r)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (b, c, 2 * r, 2 * r, 2 * r)
    for ch in range(c):
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    src = x[0, ch * 8 + 4 * i + 2 * j + k]
                    torch.testing.assert_close(y[0, ch, i::2, j::2, k::2], src, atol=0, rtol=0)


def _small_pair(norm_type="layer"):
    torch.manual_seed(0)
    enc = SparseStructureEncoder(1, 4, 1, [8, 16], num_res_blocks_middle=1, norm_type=norm_type).eval()
    dec = SparseStructureDecoder(1, 4, 1, [16, 8], num_res_blocks_middle=1, norm_type=norm_type).eval()
    for m in (enc, dec):  # the official init zeroes conv2; randomise so every layer matters
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return enc, dec


def test_shapes_posterior_sampling_and_roundtrip_dims():
    enc, dec = _small_pair()
    x = (torch.rand(2, 1, 16, 16, 16) > 0.7).float()
    with torch.no_grad():
        z, mean, logvar = enc(x, return_raw=True)
        assert z.shape == mean.shape == logvar.shape == (2, 4, 8, 8, 8)
        g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
        s1 = enc(x, sample_posterior=True, generator=g1)
        s2 = enc(x, sample_posterior=True, generator=g2)
        torch.testing.assert_close(s1, s2, atol=0, rtol=0)
        assert not torch.allclose(s1, mean)
        assert dec(z).shape == (2, 1, 16, 16, 16)


def test_group_norm_variant_and_reduced_precision():
    gdec = SparseStructureDecoder(1, 4, 1, [64, 32], num_res_blocks_middle=1, norm_type="group").eval()
    assert type(gdec.blocks[0].norm1).__name__ == "GroupNorm32"
    with torch.no_grad():
        assert gdec(torch.randn(1, 4, 4, 4, 4)).shape == (1, 1, 8, 8, 8)
    enc, dec = _small_pair("layer")
    z = torch.randn(1, 4, 4, 4, 4)
    with torch.no_grad():
        ref = dec(z)
        out = dec.to(torch.bfloat16)(z.bfloat16())
    assert out.dtype == torch.bfloat16
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 0.1
