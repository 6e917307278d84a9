"""Find the project's shared reference folder (`../shared` next to the checkout, or `$SS4D_SHARED`)."""
from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path | None:
    env = os.environ.get("SS4D_SHARED")
    cands = [Path(env)] if env else []
    root = Path(__file__).resolve().parents[2]
    cands += [root.parent / "shared", root / "shared"]
    for c in cands:
        if (c / "vectors").is_dir() or (c / "data").is_dir():
            return c
    return None
