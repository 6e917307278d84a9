"""python -m ss4d.train.assemble: stage exports -> an official-layout pipeline folder that loads and runs."""
import json

import torch

from ss4d.models.checkpoint import load_model, save_model
from ss4d.models.tiny import TINY, build_tiny
from ss4d.train.assemble import main

EXPORTS = {  # stage -> exported stems of a stage run
    "ss_vae": ["sparse_structure_decoder"], "slat_vae": ["slat_decoder_gs"],
    "ss_flow": ["sparse_structure_flow_model", "image_cond_model"],
    "slat_flow": ["slat_flow_model", "image_cond_model"],
}


def _fake_runs(root, models, seed_shift=0.0):
    for stage, stems in EXPORTS.items():
        for stem in stems:
            m = models[stem]
            if seed_shift:
                m = type(m)(**TINY[stem][1])
                m.load_state_dict({k: v + seed_shift if v.is_floating_point() else v for k, v in
                                   models[stem].state_dict().items()})
            save_model(m, TINY[stem][0], TINY[stem][1], root / stage / "export" / "ckpts" / stem)
    (root / "slat_flow" / "export" / "slat_normalization.json").write_text(
        json.dumps({"mean": [0.0] * 8, "std": [1.0] * 8}))


def test_assemble_with_a_stage_from_another_run(tmp_path):
    models = build_tiny(seed=0)
    _fake_runs(tmp_path / "runs", models)
    _fake_runs(tmp_path / "other", models, seed_shift=0.25)
    out = tmp_path / "model"
    assert main([str(tmp_path / "runs"), str(out), "--run", f"ss_flow={tmp_path / 'other' / 'ss_flow'}",
                 "--sampler-steps", "3", "--temporal-noise", "shared", "--cfg", "3", "--slat-cfg", "0",
                 "--color-from-input", "1", "--slat-steps", "2"]) == 0
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["args"]["temporal_noise"] == "shared"
    assert pipe["args"]["post_steps"] == [{"name": "color_from_input", "strength": 1.0}]
    assert pipe["args"]["sparse_structure_sampler"]["params"]["steps"] == 3
    assert pipe["args"]["slat_sampler"]["params"]["steps"] == 2
    assert pipe["args"]["sparse_structure_sampler"]["params"]["cfg_strength"] == 3.0
    assert pipe["args"]["slat_sampler"]["params"]["cfg_strength"] == 0.0
    got = load_model(out / "ckpts" / "sparse_structure_flow_model").state_dict()
    other = load_model(tmp_path / "other" / "ss_flow" / "export" / "ckpts" / "sparse_structure_flow_model")
    ref = load_model(tmp_path / "runs" / "ss_flow" / "export" / "ckpts" / "sparse_structure_flow_model")
    k = next(n for n, v in got.items() if v.is_floating_point())
    assert torch.allclose(got[k].float(), other.state_dict()[k], atol=2e-3)  # fp16 in the shipped folder
    assert not torch.allclose(got[k].float(), ref.state_dict()[k], atol=2e-3)
    assert load_model(out / "ckpts" / "slat_flow_model").window_size == 4


def test_missing_export_is_named_and_leaves_nothing(tmp_path, capsys):
    models = build_tiny(seed=0)
    _fake_runs(tmp_path / "runs", models)
    out = tmp_path / "model"
    assert main([str(tmp_path / "runs"), str(out), "--run", f"slat_flow={tmp_path / 'nowhere'}"]) == 2
    assert "slat_flow_model" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "model.tmp").exists()


def test_one_shared_frozen_conditioner_is_written_once(tmp_path):
    import numpy as np

    from ss4d.pipeline.video_to_4d import VideoTo4DPipeline

    models = build_tiny(seed=0)
    _fake_runs(tmp_path / "runs", models)  # both flows export the same image_cond_model weights
    out = tmp_path / "model"
    assert main([str(tmp_path / "runs"), str(out)]) == 0
    pipe = json.loads((out / "pipeline.json").read_text())
    assert pipe["args"]["image_cond_model"] == {"ckpt": "ckpts/image_cond_ss"}
    assert not (out / "ckpts" / "image_cond_slat.safetensors").exists()
    p = VideoTo4DPipeline.from_pretrained(out)
    frames = np.random.default_rng(0).integers(0, 255, (2, 128, 128, 3), dtype=np.uint8)
    cond = p.encode(frames)
    assert cond["sparse_structure_flow_model"] is cond["slat_flow_model"]  # encoded once


def test_base_folder_supplies_missing_stages_and_settings(tmp_path):
    """--base: stages without a run folder come from an existing pipeline folder, with its ss4d settings; a flow
    trained with a frozen conditioner uses the checkpoint its run config names."""
    models = build_tiny(seed=0)
    _fake_runs(tmp_path / "runs", models)
    base = tmp_path / "base"
    assert main([str(tmp_path / "runs"), str(base), "--temporal-noise", "shared", "--color-from-input", "1"]) == 0
    cfg = json.loads((base / "pipeline.json").read_text())
    cfg["args"]["silhouette_guidance"] = {"carve": True, "fill": True}
    (base / "pipeline.json").write_text(json.dumps(cfg))
    # a new latent-flow run only: its conditioner was frozen (the base's), so the run did not export it
    new = tmp_path / "new"
    flow = type(models["slat_flow_model"])(**TINY["slat_flow_model"][1])
    save_model(flow, TINY["slat_flow_model"][0], TINY["slat_flow_model"][1],
               new / "slat_flow" / "export" / "ckpts" / "slat_flow_model")
    (new / "slat_flow" / "export" / "slat_normalization.json").write_text(json.dumps({"mean": [0.5] * 8,
                                                                                     "std": [2.0] * 8}))
    (new / "slat_flow" / "config.json").write_text(json.dumps({"models": {"conditioner": {
        "checkpoint": str(base / "ckpts" / "image_cond_ss"), "trainable": False}}}))
    out = tmp_path / "model"
    assert main([str(new), str(out), "--base", str(base), "--color-from-input", "0"]) == 0
    pipe = json.loads((out / "pipeline.json").read_text())["args"]
    assert pipe["silhouette_guidance"] == {"carve": True, "fill": True} and pipe["temporal_noise"] == "shared"
    assert "post_steps" not in pipe                                   # switched off here
    assert pipe["slat_normalization"] == {"mean": [0.5] * 8, "std": [2.0] * 8}
    assert pipe["image_cond_model"] == {"ckpt": "ckpts/image_cond_ss"}  # the frozen conditioner, written once
    got = load_model(out / "ckpts" / "slat_flow_model").state_dict()
    for k, v in flow.state_dict().items():
        assert torch.allclose(got[k].float(), v, atol=2e-3)
    for key in ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_decoder_gs"):
        a, b = load_model(out / "ckpts" / key).state_dict(), load_model(base / "ckpts" / key).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
