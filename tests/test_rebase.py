"""`python -m ss4d.train.rebase`: a trained SLat encoder standardised over a dataset (its latents then have zero mean
and unit std per channel, recomputed independently), a decoder re-based from a statistics file, and bad input."""
from __future__ import annotations

import json

import pytest
import torch

from ss4d.data.dataset import ClipDataset, write_procedural_dataset
from ss4d.models.checkpoint import load_model, save_model
from ss4d.models.registry import build
from ss4d.models.tiny import TINY, build_tiny
from ss4d.sparse.tensor import SparseTensor
from ss4d.train.latents import encode_slat, slat_normalization_stats
from ss4d.train.rebase import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rb") / "data"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    s = write_procedural_dataset(root, 2, T=2, R=8, V=1, size=16, seed=3, num_points=400, cond_size=16)
    torch.set_num_threads(n)
    assert not s["failed"]
    return root


def test_standardize_then_the_latents_are_unit_scale(data, tmp_path):
    torch.manual_seed(0)
    width = ClipDataset(data, num_frames=2, views_per_frame=0, load_cond=False, load_views=False)[0]["feats"].shape[1]
    name, args = TINY["slat_encoder"][0], {**TINY["slat_encoder"][1], "in_channels": width, "model_channels": 64,
                                           "num_blocks": 1, "num_heads": 2}
    save_model(build(name, args).eval(), name, args, tmp_path / "enc")
    assert main(["standardize", "--encoder", str(tmp_path / "enc"), "--data", str(data), "--feature", "stored",
                 "--frames", "2", "-o", str(tmp_path / "std" / "enc")]) == 0
    stats = json.loads((tmp_path / "std" / "enc.stats.json").read_text())
    assert stats["clips"] == 2 and min(stats["std"]) > 0
    enc = load_model(tmp_path / "std" / "enc")
    ds = ClipDataset(data, num_frames=2, views_per_frame=0, load_cond=False, load_views=False, windows="first")
    lat = [encode_slat(enc, ds[i]["coords"], ds[i]["feats"], 2, 2) for i in range(len(ds))]
    again = slat_normalization_stats(lat)
    assert max(abs(m) for m in again["mean"]) < 1e-4
    assert max(abs(s - 1) for s in again["std"]) < 1e-4


def test_fold_from_a_stats_file_restarts_the_latent_weights(tmp_path):
    dec = build_tiny(names=["slat_decoder_gs"])["slat_decoder_gs"].eval()
    spec = TINY["slat_decoder_gs"]
    save_model(dec, spec[0], spec[1], tmp_path / "dec")
    C = dec.input_layer.weight.shape[1]
    mean = torch.randn(C).tolist()
    (tmp_path / "s.stats.json").write_text(json.dumps({"mean": mean, "std": [1.0] * C}))
    assert main(["fold", "--decoder", str(tmp_path / "dec"), "--mean-from", str(tmp_path / "s.stats.json"),
                 "--std", "0", "-o", str(tmp_path / "out" / "dec")]) == 0
    new = load_model(tmp_path / "out" / "dec")
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 4, 4], [1, 1, 2, 3]], dtype=torch.int32)
    with torch.no_grad():
        ref = dec.decode_raw(SparseTensor(torch.tensor(mean).expand(3, C).contiguous(), coords, 2), 2).feats
        out = new.decode_raw(SparseTensor(torch.randn(3, C), coords, 2), 2).feats
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert new.input_layer.weight.abs().max() == 0


def test_bad_input_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "p.json").write_text("{}")
    assert main(["fold", "--decoder", str(tmp_path / "none"), "--mean-from", str(tmp_path / "p.json"),
                 "-o", str(tmp_path / "o")]) == 2
    assert "rebase: error:" in capsys.readouterr().err
    assert not (tmp_path / "o.safetensors").exists()
