"""Object masks of frames: the one place that decides what counts as object in a premultiplied frame."""
from __future__ import annotations

import numpy as np

__all__ = ["mask_from_premultiplied"]


def mask_from_premultiplied(frames, threshold: int = 8) -> np.ndarray:
    """Object mask ``bool [..., H, W]`` of premultiplied uint8 RGB frames (object over black): any channel above
    ``threshold``. For preprocessed frames whose alpha was not kept."""
    return np.asarray(frames).max(-1) > threshold
