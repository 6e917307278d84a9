"""Stage trainers: the loss falls on small synthetic sets, one clip is overfit, the optimisation machinery
(EMA, clipping, bf16, NaN guard, export) and the clear errors on bad configs / data / checkpoints."""
from __future__ import annotations

import json

import pytest
import torch
from test_train_helpers import DATA, MODELS, config, one_thread  # noqa: F401

from ss4d.models.checkpoint import load_model
from ss4d.train import ConfigError, DataError, NonFiniteLossError, TrainCheckpointError, train
from ss4d.train.__main__ import main as cli_main
from ss4d.train.checkpoints import list_checkpoints
from ss4d.train.loop import SyntheticClips, build_role, collate
from ss4d.train.trainers import TRAINERS, AdaptiveGradClipper, slat_normalization_stats


def _trainer(stage, lr=3e-3, data=None, **kw):
    cls = TRAINERS[stage]
    torch.manual_seed(0)
    models, frozen = {}, {}
    for r, sp in MODELS[stage].items():
        m, _ = build_role(r, sp, frozen=r in cls.frozen_roles)
        (frozen if r in cls.frozen_roles else models)[r] = m
    d = {k: v for k, v in DATA.items() if k != "type"} | (data or {})
    ds = SyntheticClips(**d)
    tr = cls(models, frozen, lr=lr, ema_rate=None, grad_clip=1.0, **kw)
    return tr, ds


def _eval(tr, batches, draws=3):
    """Loss on fixed batches with fixed random draws (independent of the training step)."""
    step, tot, n = tr.step, 0.0, 0
    with torch.no_grad():
        for k in range(draws):
            for b in batches:
                tr.step = 10**6 + k
                tot += tr.compute_loss(tr.to_device(tr.check_batch(b)))[0].item()
                n += 1
    tr.step = step
    return tot / n


@pytest.mark.parametrize("stage,steps,ratio,data", [
    ("ss_vae", 40, 0.5, {}),
    ("ss_flow", 50, 0.5, {}),
    ("slat_flow", 40, 0.8, {}),
    ("slat_vae", 30, 0.6, {"resolution": 12, "view_size": 32}),
])
def test_loss_falls(stage, steps, ratio, data):
    kw = {}
    if stage == "slat_flow":
        kw["normalization"] = None
    tr, ds = _trainer(stage, data=data, **kw)
    B = 1 if stage == "slat_vae" else 2
    n = 2 if stage == "slat_vae" else 4
    batches = [collate([ds[i] for i in range(j, j + B)]) for j in range(0, n, B)]
    if stage == "slat_flow":  # normalise the latents as the loop does ("compute")
        lat = [tr.latents(tr.check_batch(collate([ds[i]]))) for i in range(n)]
        tr.set_normalization(slat_normalization_stats(lat))
    e0 = _eval(tr, batches)
    for i in range(steps):
        m = tr.train_step(batches[i % len(batches)])
        assert torch.isfinite(torch.tensor(m["loss"]))
    e1 = _eval(tr, batches)
    assert e1 < ratio * e0, (e0, e1)


def test_overfit_one_clip_ss_vae():
    tr, ds = _trainer("ss_vae", lr=5e-3, data={"resolution": 8, "num_clips": 1}, loss={"kl_weight": 0.0,
                                                                                       "sample_posterior": False})
    batch = collate([ds[0]])
    for _ in range(60):
        m = tr.train_step(batch)
    assert m["dice"] < 0.03, m  # from ~0.85
    assert tr.preview(batch, None, 0)["iou"] > 0.9


def test_ema_clipping_and_bf16():
    tr, ds = _trainer("ss_flow", lr=1e-2, precision="bf16")
    tr.ema_rates = [0.9]
    tr.ema = {"0.9": [p.detach().clone() for _, p in tr.params]}
    before = [p.detach().clone() for _, p in tr.params]
    m = tr.train_step(collate([ds[0], ds[1]]))
    assert m["grad_norm"] > 0 and torch.isfinite(torch.tensor(m["loss"]))
    for (_, p), b, e in zip(tr.params, before, tr.ema["0.9"]):  # warm-up: update 0 uses min(0.9, 1/10)
        torch.testing.assert_close(e, 0.1 * b + 0.9 * p.detach())
    tr.step = 1000  # later updates use the configured rate
    before = [e.clone() for e in tr.ema["0.9"]]
    tr.update_ema()
    for (_, p), b, e in zip(tr.params, before, tr.ema["0.9"]):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p.detach())
    c = AdaptiveGradClipper(1.0, clip_percentile=50, history=4)
    for v in (0.1, 0.2, 0.3, 0.4):
        c.buffer.append(v)
    assert c.threshold() == pytest.approx(0.25)
    c2 = AdaptiveGradClipper(1.0, 50, 4)
    c2.load_state_dict(c.state_dict())
    assert list(c2.buffer) == list(c.buffer)


def test_nan_loss_stops_without_checkpoint(tmp_path, monkeypatch):
    cls = TRAINERS["ss_vae"]
    orig = cls.compute_loss

    def nan_at_step_3(self, batch):
        loss, terms = orig(self, batch)
        return (loss * float("nan") if self.step == 2 else loss), terms

    monkeypatch.setattr(cls, "compute_loss", nan_at_step_3)
    cfg = config("ss_vae", tmp_path / "run", steps=5, ckpt_every=1, keep_ckpts=5)
    cfg["data"]["resolution"] = 8
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 2.*without writing a checkpoint"):
        train(cfg)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "ckpts")] == [1, 2]
    assert not (tmp_path / "run" / "export").exists()


def test_export_loads_and_holds_ema_weights(tmp_path):
    cfg = config("ss_flow", tmp_path / "run", steps=2, ckpt_every=0, ema_rate=[0.5, 0.9])
    res = train(cfg)
    st = torch.load(res["checkpoint"], weights_only=True)
    flow = load_model(tmp_path / "run" / "export" / "ckpts" / "sparse_structure_flow_model")
    cond = load_model(tmp_path / "run" / "export" / "ckpts" / "image_cond_model")
    ema = st["trainer"]["ema"]["0.5"]
    for k, v in flow.state_dict().items():
        if f"flow.{k}" in ema:
            assert torch.equal(v, ema[f"flow.{k}"]), k
    assert any(f"conditioner.{k}" in ema for k in cond.state_dict())
    assert set(st["trainer"]["ema"]) == {"0.5", "0.9"}


def test_frozen_conditioner_and_augment(tmp_path):
    cfg = config("ss_flow", tmp_path / "run", steps=2, ckpt_every=0, export=False,
                 augment={"occluder": {"p": 1.0}, "frame_drop": {"p": 1.0}})
    cfg["models"]["conditioner"]["trainable"] = False
    res = train(cfg)
    st = torch.load(res["checkpoint"], weights_only=True)
    assert set(st["trainer"]["models"]) == {"flow"}
    assert all(k.startswith("flow.") for k in st["trainer"]["ema"]["0.99"])


# ---------------------------------------------------------------------------------------------- bad input
def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key.*learning_rate"):
        train(config("ss_vae", tmp_path, learning_rate=1e-3))
    with pytest.raises(ConfigError, match="unknown stage"):
        train(dict(config("ss_vae", tmp_path), stage="mesh_vae"))
    with pytest.raises(ConfigError, match="unknown key.*loss options.*dice_weight"):
        train(config("ss_vae", tmp_path, loss={"dice_weight": 1.0}))
    cfg = config("ss_vae", tmp_path)
    cfg["models"]["flow"] = {"tiny": "slat_flow_model"}
    with pytest.raises(ConfigError, match="no model role"):
        train(cfg)
    cfg = config("ss_vae", tmp_path)
    cfg["models"]["encoder"]["chanels"] = 3
    with pytest.raises(ConfigError, match="models.encoder"):
        train(cfg)
    cfg = config("ss_flow", tmp_path)
    del cfg["models"]["ss_encoder"]
    with pytest.raises(ConfigError, match="ss_encoder"):
        train(cfg)
    with pytest.raises(ConfigError, match="not found"):
        train(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(config("ss_vae", tmp_path / "x", lr_schedule="cosine")))
    assert cli_main([str(bad)]) == 2


def test_missing_data_set(tmp_path, capsys):
    cfg = config("ss_vae", tmp_path / "run", data={"type": "folder", "path": str(tmp_path / "no_such_folder")})
    with pytest.raises(DataError, match="data set folder not found"):
        train(cfg)
    (tmp_path / "empty").mkdir()
    cfg["data"]["path"] = str(tmp_path / "empty")
    with pytest.raises(DataError, match="holds no clip files"):
        train(cfg)
    cfg["data"] = {"type": "synthetic", "num_clips": 1}
    with pytest.raises(DataError, match="fewer than the global batch"):
        train(cfg)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(config("ss_vae", tmp_path / "r", data={"type": "folder", "path": "/nonexistent"})))
    assert cli_main([str(p)]) == 2
    assert "data set folder not found" in capsys.readouterr().err


def test_folder_data_set_and_incompatible_resume(tmp_path):
    from ss4d.train.loop import save_clip

    ds = SyntheticClips(num_clips=2, num_frames=2, resolution=8, feat_channels=16, image_size=32, num_views=1,
                        view_size=8)
    for i in range(2):
        save_clip(tmp_path / "clips" / f"{i:03d}.pt", ds[i])
    cfg = config("ss_vae", tmp_path / "run", steps=2, data={"type": "folder", "path": str(tmp_path / "clips")})
    train(cfg)
    # same out_dir, other model -> clear error instead of silently mixing weights
    cfg2 = json.loads(json.dumps(cfg))
    cfg2["steps"] = 4
    cfg2["models"]["decoder"]["args"]["channels"] = [32, 16, 16]
    with pytest.raises(TrainCheckpointError, match="does not fit this config.*decoder"):
        train(cfg2)
    cfg3 = dict(cfg, steps=4, batch_size=1)
    with pytest.raises(TrainCheckpointError, match="batch_size"):
        train(cfg3)
    # a corrupt newest checkpoint -> clear error
    (tmp_path / "run" / "ckpts" / "step_00000003.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainCheckpointError, match="cannot read training checkpoint"):
        train(dict(cfg, steps=4))
    # resume=false starts over; an explicit resume path continues
    res = train(dict(cfg, steps=3, resume=str(tmp_path / "run" / "ckpts" / "step_00000002.pt"),
                     out_dir=str(tmp_path / "run2")))
    assert res["step"] == 3


def test_shipped_configs_validate_and_official_shapes():
    """configs/tiny and configs/official parse; official model args give the released parameter counts
    (built on the meta device: no memory)."""
    from pathlib import Path

    from ss4d.models.registry import build
    from ss4d.train.loop import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("tiny/*.json")) + sorted(root.glob("official/*.json"))
    assert {f.stem for f in files} >= {"ss_vae", "slat_vae", "ss_flow", "slat_flow"}
    counts = {}
    for f in files:
        cfg = load_config(f)
        assert set(cfg["models"]) <= set(TRAINERS[cfg["stage"]].roles + TRAINERS[cfg["stage"]].frozen_roles)
        if f.parent.name == "official":
            for role, spec in cfg["models"].items():
                if spec.get("name") in (None, "DinoV2Conditioner"):
                    continue
                with torch.device("meta"):
                    m = build(spec["name"], spec["args"])
                counts[(cfg["stage"], role)] = (sum(p.numel() for p in m.parameters()), len(m.state_dict()))
    assert counts[("ss_flow", "flow")] == (555_543_560, 489)
    assert counts[("slat_flow", "flow")] == (644_503_432, 562)
    assert counts[("slat_vae", "decoder")] == (85_369_024, 101)
    assert counts[("ss_vae", "decoder")] == (73_671_201, 74)


def test_seeded_sampler_split_and_position():
    from ss4d.train.loop import SeededSampler

    full = SeededSampler(10, 4, seed=3)
    r0, r1 = SeededSampler(10, 4, seed=3, rank=0, world=2), SeededSampler(10, 4, seed=3, rank=1, world=2)
    seen = []
    for _ in range(5):  # 2 batches per epoch (tail of 2 dropped), then a new permutation
        ids, slots = full.next()
        a, sa = r0.next()
        b, sb = r1.next()
        assert a + b == ids and sa + sb == slots == [0, 1, 2, 3] and len(set(ids)) == 4
        seen.append(ids)
    assert full.state_dict() == {"epoch": 2, "index": 4}
    assert seen[0] != seen[2]
    again = SeededSampler(10, 4, seed=3)
    again.load_state_dict({"epoch": 1, "index": 4})
    assert again.next()[0] == seen[3]
    with pytest.raises(ConfigError, match="not divisible"):
        SeededSampler(10, 3, world=2)
