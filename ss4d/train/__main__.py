"""`python -m ss4d.train CONFIG.json [--set key=value ...]` (also under `torchrun --nproc_per_node N`).

Exit status: 0 done, 2 bad config / data / checkpoint (message on stderr), 3 non-finite loss or other training
error (no checkpoint is written for the failing step).
"""
from __future__ import annotations

import argparse
import json
import sys


def _parse_set(items):
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ss4d.train", description="train an SS4D stage from a JSON config")
    ap.add_argument("config", help="training config (JSON), see docs/training.md")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a top-level config key (value parsed as JSON when possible); repeatable")
    ap.add_argument("--out-dir", help="override out_dir")
    ap.add_argument("--steps", type=int, help="override steps")
    a = ap.parse_args(argv)
    over = _parse_set(a.set)
    if a.out_dir:
        over["out_dir"] = a.out_dir
    if a.steps is not None:
        over["steps"] = a.steps
    from ..errors import InputError
    from ..models.checkpoint import CheckpointError
    from .loop import train
    from .trainers import TrainingError

    try:
        res = train(a.config, over)
    except (InputError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if res.get("rank", 0) == 0:
        print(json.dumps({"step": res["step"], "checkpoint": res["checkpoint"], "out_dir": res["out_dir"],
                          **{k: round(v, 6) for k, v in res["metrics"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
