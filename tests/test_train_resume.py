"""Crash-resume and data-parallel equivalence of ss4d.train (subprocesses; deterministic mode, 1 thread)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from test_train_helpers import DATA, ROOT, config, env, one_thread, run_cli, state  # noqa: F401

from ss4d.train import train
from ss4d.train.checkpoints import list_checkpoints


def _assert_same_state(a: dict, b: dict, exact: bool = True, atol: float = 0.0):
    ta, tb = a["trainer"], b["trainer"]
    assert ta["step"] == tb["step"]
    assert a["data"] == b["data"]
    groups = [("models", ta["models"], tb["models"])]
    groups += [(f"ema {r}", ta["ema"][r], tb["ema"][r]) for r in ta["ema"]]
    for name, ga, gb in groups:
        assert set(ga) == set(gb)
        for k in ga:
            va, vb = ga[k], gb[k]
            if isinstance(va, dict):
                for kk in va:
                    if exact:
                        assert torch.equal(va[kk], vb[kk]), f"{name} {k}.{kk} differs"
                    else:
                        torch.testing.assert_close(va[kk], vb[kk], atol=atol, rtol=1e-4, msg=f"{name} {k}.{kk}")
            elif exact:
                assert torch.equal(va, vb), f"{name} {k} differs"
            else:
                torch.testing.assert_close(va, vb, atol=atol, rtol=1e-4, msg=f"{name} {k}")
    if exact:
        oa, ob = ta["optimizer"]["state"], tb["optimizer"]["state"]
        assert set(oa) == set(ob)
        for i in oa:
            for k in oa[i]:
                assert torch.equal(oa[i][k], ob[i][k]), f"optimizer state {i}.{k} differs"


@pytest.mark.parametrize("stage,steps,data", [
    ("ss_flow", 14, {}),
    ("ss_vae", 10, {"resolution": 8}),
])
def test_sigkill_resume_bit_identical(tmp_path, stage, steps, data):
    rng = random.Random(1234 + steps)
    common = dict(steps=steps, ckpt_every=2, keep_ckpts=2, deterministic=True, num_threads=1, ema_rate=0.95)
    ref_cfg = config(stage, tmp_path / "ref", **common)
    ref_cfg["data"].update(data)
    ref = train(ref_cfg)  # uninterrupted run, in this process (same deterministic settings)
    assert ref["step"] == steps

    cfg = config(stage, tmp_path / "run", **common)
    cfg["data"].update(data)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    kill_at = rng.choice([3, 5, 6])  # a random step after the checkpoint of step 2 or 4
    proc = subprocess.Popen([sys.executable, "-m", "ss4d.train", str(cfg_path)], cwd=ROOT, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ck_dir = tmp_path / "run" / "ckpts"
    log = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 180

    def logged_step():
        try:
            lines = [x for x in log.read_text().splitlines() if x.endswith("}")]
        except FileNotFoundError:
            return 0
        return json.loads(lines[-1])["step"] if lines else 0

    try:
        while logged_step() < kill_at:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.time() < deadline, "the run did not progress in time"
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.03))  # somewhere inside the next step
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    done = [s for s, _ in list_checkpoints(ck_dir)]
    assert done and max(done) < steps, done

    r = run_cli(cfg_path)  # resume = "auto": continues from the newest complete checkpoint
    assert r.returncode == 0, r.stderr[-3000:]
    final = ck_dir / f"step_{steps:08d}.pt"
    _assert_same_state(state(tmp_path / "ref" / "ckpts" / f"step_{steps:08d}.pt"), state(final))
    # the metrics log holds each step once, and the resumed steps reproduce the reference losses
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ref_rows = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == list(range(1, steps + 1))
    assert [x["loss"] for x in rows] == [x["loss"] for x in ref_rows]


def test_ddp_and_fsdp_two_processes_match_one(tmp_path):
    """2-process gloo data parallelism (torchrun + `python -m ss4d.train`) == 1 process with the same global batch
    (float tolerance); the same with FSDP sharding of the (sparse) flow and the conditioner."""
    common = dict(steps=3, batch_size=2, ckpt_every=3, lr=1e-3, ema_rate=0.9, export=False)
    one = config("slat_flow", tmp_path / "one", **common)
    train(one)
    a = state(tmp_path / "one" / "ckpts" / "step_00000003.pt")
    la = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        cfg = config("slat_flow", tmp_path / name, distributed={"fsdp": fsdp}, **common)
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "ss4d.train", str(p)]
        r = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
        assert r.stdout.count('"step": 3') == 1  # only rank 0 reports
        b = state(tmp_path / name / "ckpts" / "step_00000003.pt")
        _assert_same_state(a, b, exact=False, atol=2e-5)
        assert b["fingerprint"]["fsdp"] is fsdp
        lb = [json.loads(x)["loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert la == pytest.approx(lb, rel=1e-4)


def test_resume_applies_the_configured_learning_rate(tmp_path):
    """A run resumed with another lr trains with that lr (the checkpoint keeps the Adam moments, not the lr)."""
    train(config("ss_vae", tmp_path / "run", data={**DATA, "resolution": 8},
                 steps=2, lr=1e-3))
    res = train(config("ss_vae", tmp_path / "run", data={**DATA, "resolution": 8},
                       steps=4, lr=5e-4))
    assert res["step"] == 4
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == [1e-3, 1e-3, 5e-4, 5e-4]
