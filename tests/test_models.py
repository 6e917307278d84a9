"""Registry, strict checkpoint loading and bad-input errors of the networks."""
import json

import pytest
import torch
from safetensors.torch import save_file

from ss4d.models import UnknownModelError, build
from ss4d.models.checkpoint import CheckpointError, load_model, save_model
from ss4d.models.tiny import TINY, build_tiny
from ss4d.sparse import SparseTensor


def test_unknown_model_name():
    with pytest.raises(UnknownModelError, match="unknown model name 'NoSuchModel'"):
        build("NoSuchModel", {})


def test_bad_args_name_the_model():
    with pytest.raises(ValueError, match="SLatFlow4DModel"):
        build("SLatFlow4DModel", {"nonsense": 1})


def test_official_json_form_and_4d_defaults():
    name, args = TINY["sparse_structure_flow_model"]
    m = build({"name": name, "args": args})
    assert m.blocks[0].self_attn.type == "temporal" and m.blocks[1].self_attn.shift_window == 4
    m3 = build("SparseStructureFlowModel", {**args, "pe_mode": "ape", "expand_self_attn": False,
                                             "window_size": None})
    assert m3.blocks[0].self_attn.type == "self"
    assert set(m.state_dict()) == set(m3.state_dict())  # 4D adds no parameters


def _save(tmp_path, key):
    m = build_tiny(0, names=[key])[key]
    name, args = TINY[key]
    save_model(m, name, args, tmp_path / key)
    return m


def test_round_trip_and_fp16_cast(tmp_path):
    m = _save(tmp_path, "slat_decoder_gs")
    back = load_model(tmp_path / "slat_decoder_gs")
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    name, args = TINY["slat_decoder_gs"]
    save_model(m, name, args, tmp_path / "half", dtype=torch.float16)
    h = load_model(tmp_path / "half")
    assert h.out_layer.weight.dtype == torch.float32
    assert torch.allclose(h.out_layer.weight, m.out_layer.weight, atol=1e-3)


def test_strict_loading_lists_problems(tmp_path):
    m = _save(tmp_path, "slat_decoder_gs")
    sd = dict(m.state_dict())
    sd.pop("out_layer.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["input_layer.weight"] = torch.zeros(3, 3)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "slat_decoder_gs.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_model(tmp_path / "slat_decoder_gs")
    msg = str(e.value)
    assert "missing keys: out_layer.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "input_layer.weight (3, 3)" in msg and "slat_decoder_gs.safetensors" in msg


def test_nan_weights_rejected(tmp_path):
    m = _save(tmp_path, "sparse_structure_decoder")
    sd = {k: v.clone().contiguous() for k, v in m.state_dict().items()}
    sd["input_layer.weight"][0, 0, 0, 0, 0] = float("nan")
    save_file(sd, str(tmp_path / "sparse_structure_decoder.safetensors"))
    with pytest.raises(CheckpointError, match="NaN or Inf: input_layer.weight"):
        load_model(tmp_path / "sparse_structure_decoder")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="model config not found"):
        load_model(tmp_path / "nothing")
    _save(tmp_path, "sparse_structure_decoder")
    (tmp_path / "sparse_structure_decoder.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_model(tmp_path / "sparse_structure_decoder")
    (tmp_path / "sparse_structure_decoder.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "sparse_structure_decoder")


def test_odd_frame_count_rejected_by_latent_flow():
    m = build_tiny(0, names=["slat_flow_model"])["slat_flow_model"].eval()
    coords = torch.tensor([[f, 3, 4, 5] for f in range(3)], dtype=torch.int32)
    x = SparseTensor(torch.randn(3, 8), coords)
    with pytest.raises(ValueError, match="even number of frames"):
        m(x, torch.zeros(3), torch.zeros(3, 4, 128), num_frames=3)


def test_wrong_input_shapes():
    f = build_tiny(0, names=["sparse_structure_flow_model"])["sparse_structure_flow_model"]
    with pytest.raises(ValueError, match="expected x of shape"):
        f(torch.zeros(2, 3, 8, 8, 8), torch.zeros(2), torch.zeros(2, 4, 128), num_frames=2)
    m = build_tiny(0, names=["slat_flow_model"])["slat_flow_model"]
    x = SparseTensor(torch.randn(2, 5), torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.int32))
    with pytest.raises(ValueError, match="expected 8 input channels"):
        m(x, torch.zeros(2), torch.zeros(2, 4, 128), num_frames=2)


def test_temporal_reasoning_changes_output():
    """The 4D flow couples frames: changing frame 1's input changes frame 0's output (a per-frame model would not)."""
    f = build_tiny(0, names=["sparse_structure_flow_model"])["sparse_structure_flow_model"].eval()
    for p in f.parameters():  # the official init zeroes the gates; make them non-zero for this test
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(4, 8, 8, 8, 8)
    t = torch.full((4,), 500.0)
    c = torch.randn(4, 64, 128)
    with torch.no_grad():
        a = f(x, t, c, num_frames=4)
        x2 = x.clone()
        x2[1] += 1
        b = f(x2, t, c, num_frames=4)
        c3 = f(x2, t, c, num_frames=1)  # frames as independent samples
        d3 = f(x, t, c, num_frames=1)
    assert (a[0] - b[0]).abs().max() > 1e-4
    assert torch.allclose(c3[0], d3[0], atol=1e-6)


def test_model_config_json(tmp_path):
    m = _save(tmp_path, "sparse_structure_decoder")
    cfg = json.loads((tmp_path / "sparse_structure_decoder.json").read_text())
    assert cfg["name"] == "SparseStructureDecoder"
    assert sum(p.numel() for p in m.parameters()) > 0
