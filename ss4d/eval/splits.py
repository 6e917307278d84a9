"""Asset splits and a model's training record: which assets a number may be reported on.

* :func:`make_asset_split` splits an asset manifest (``shared/data/train_assets/manifest.json``: ``file``,
  ``category``) by asset into train / validation / test, stratified by category, deterministic from a seed;
  ``python -m ss4d.eval.splits`` writes ``configs/splits/assets.json`` (the committed split).
* :func:`load_training_record` reads the asset ids a model folder was trained and tuned on (``training.json``
  beside ``pipeline.json``, or a ``"training"`` block inside it); ``ss4d evaluate`` keeps those assets out of the
  headline mean unless ``--include-training-assets`` is given.

Asset ids are the ids ``ss4d evaluate`` gives assets: the file stem made folder-safe
(:func:`ss4d.data.blender.safe_name`), ``proc<SEED>_<index>`` for procedural clips. Record entries may be fnmatch
patterns (``proc0_*``: every clip of master seed 0).
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import random
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SPLIT_FORMAT", "RECORD_FORMAT", "asset_id_of", "make_asset_split", "TrainingRecord",
           "load_training_record", "main"]

SPLIT_FORMAT = "ss4d-asset-split-v1"
RECORD_FORMAT = "ss4d-training-record-v1"
RECORD_FILE = "training.json"


def asset_id_of(path: str) -> str:
    """The id ``ss4d evaluate`` / ``ss4d data render`` give the asset file ``path`` (its folder-safe stem)."""
    from ss4d.data.blender import safe_name

    return safe_name(Path(path).stem)


def make_asset_split(manifest: list[dict], seed: int = 0, fractions: tuple = (0.70, 0.15, 0.15)) -> dict:
    """Split manifest entries (``file``, ``category``) by asset into ``train`` / ``validation`` / ``test``,
    stratified: within each category (sorted ids, shuffled by ``seed``) the counts are the largest-remainder
    rounding of ``fractions``, with at least one validation and one test asset for a category of 3 or more.
    Returns ``{"splits": {name: [ids]}, "categories": {id: category}}``. Raises ``ValueError`` on bad input."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    by_cat: dict = defaultdict(list)
    cats: dict = {}
    for i, e in enumerate(manifest):
        if not isinstance(e, dict) or "file" not in e:
            raise ValueError(f"manifest entry {i} has no 'file'")
        aid = asset_id_of(e["file"])
        if aid in cats:
            raise ValueError(f"manifest: two entries map to the asset id {aid!r}")
        cat = str(e.get("category") or "uncategorised")
        cats[aid] = cat
        by_cat[cat].append(aid)
    names = ("train", "validation", "test")
    out: dict = {n: [] for n in names}
    for cat in sorted(by_cat):
        ids = sorted(by_cat[cat])
        random.Random(f"{seed}:{cat}").shuffle(ids)
        n = len(ids)
        raw = [f * n for f in fractions]
        cnt = [int(math.floor(r)) for r in raw]
        for k in sorted(range(3), key=lambda k: (-(raw[k] - cnt[k]), k))[: n - sum(cnt)]:
            cnt[k] += 1
        if n >= 3:
            for k in (1, 2):              # every category of 3+ assets appears in validation and test
                if cnt[k] == 0 and fractions[k] > 0:
                    cnt[k], cnt[0] = 1, cnt[0] - 1
        start = 0
        for name, c in zip(names, cnt):
            out[name].extend(ids[start:start + c])
            start += c
    return {"splits": {k: sorted(v) for k, v in out.items()}, "categories": dict(sorted(cats.items()))}


@dataclass
class TrainingRecord:
    """Asset ids (or fnmatch patterns) a model was trained and tuned on, and its output frame's input yaw."""

    trained_on: list = field(default_factory=list)
    tuned_on: list = field(default_factory=list)
    input_view_yaw_deg: float | None = None
    source: str | None = None

    def role(self, asset_id: str) -> str | None:
        """``"trained"``, ``"tuned"`` or None for an asset id (a hash suffix ``-1a2b3c4d`` of a duplicate stem is
        ignored)."""
        cands = {asset_id}
        m = re.fullmatch(r"(.+)-[0-9a-f]{8}", asset_id)
        if m:
            cands.add(m.group(1))
        for role, pats in (("trained", self.trained_on), ("tuned", self.tuned_on)):
            if any(fnmatch.fnmatchcase(c, p) for c in cands for p in pats):
                return role
        return None


def load_training_record(model_dir) -> TrainingRecord | None:
    """The training record of a model folder (``training.json``, else ``pipeline.json["training"]``); None when the
    folder has neither. Raises ``ValueError`` naming the file for a malformed record."""
    d = Path(model_dir)
    rec, src = None, None
    tp = d / RECORD_FILE
    if tp.is_file():
        try:
            rec = json.loads(tp.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, OSError) as e:
            raise ValueError(f"{tp}: unreadable training record: {e}") from None
        src = str(tp)
    else:
        pp = d / "pipeline.json"
        if pp.is_file():
            try:
                rec = json.loads(pp.read_text(encoding="utf-8")).get("training")
            except (json.JSONDecodeError, OSError, AttributeError):
                rec = None
            src = f"{pp} (training)"
    if rec is None:
        return None
    if not isinstance(rec, dict):
        raise ValueError(f"{src}: the training record must be a JSON object")
    lists = {}
    for k in ("trained_on", "tuned_on"):
        v = rec.get(k, [])
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ValueError(f"{src}: '{k}' must be a list of asset ids")
        lists[k] = v
    yaw = rec.get("input_view_yaw_deg")
    if yaw is not None and not isinstance(yaw, (int, float)):
        raise ValueError(f"{src}: 'input_view_yaw_deg' must be a number")
    return TrainingRecord(lists["trained_on"], lists["tuned_on"], None if yaw is None else float(yaw), src)


def main(argv=None) -> int:
    """``python -m ss4d.eval.splits``: write the committed asset split (``configs/splits/assets.json``)."""
    p = argparse.ArgumentParser(prog="python -m ss4d.eval.splits", description=main.__doc__)
    p.add_argument("--manifest", default="../shared/data/train_assets/manifest.json")
    p.add_argument("--extra-assets", default="../shared/data/assets",
                   help="folder of further assets listed as they are (not split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", default="configs/splits/assets.json")
    a = p.parse_args(argv)
    from ss4d.io_utils import atomic_write_text

    mp = Path(a.manifest)
    try:
        manifest = json.loads(mp.read_text(encoding="utf-8"))
        split = make_asset_split(manifest, a.seed)
    except (OSError, json.JSONDecodeError, ValueError, TypeError) as e:
        print(f"error: {mp}: {e}", file=sys.stderr)
        return 2
    extra = sorted(asset_id_of(f.name) for f in Path(a.extra_assets).glob("*")
                   if f.suffix.lower() in (".glb", ".gltf", ".fbx", ".obj", ".blend"))
    doc = {"format": SPLIT_FORMAT, "seed": a.seed, "fractions": [0.70, 0.15, 0.15],
           "source": {"manifest": "shared/data/train_assets/manifest.json", "assets": len(manifest)},
           "rule": "by asset, stratified by manifest category; per category (sorted ids shuffled by "
                   "random.Random(f'{seed}:{category}')) the largest-remainder rounding of 70/15/15 %, at least one "
                   "validation and one test asset for a category of 3 or more (ss4d.eval.splits.make_asset_split)",
           **split,
           "extra_assets": {"folder": "shared/data/assets", "ids": extra,
                            "note": "the 8 older assets, not split; the shipped default model trained on 7 of "
                                    "them and was tuned on Fox (ss4d/assets/default_model/training.json)"}}
    atomic_write_text(a.output, json.dumps(doc, indent=1) + "\n", overwrite=True)
    n = {k: len(v) for k, v in split["splits"].items()}
    print(f"{a.output}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
