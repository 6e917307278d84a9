"""Which frames of a clip the pipeline uses: frame selection and the overlapping windows of long clips."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ss4d.errors import InputError

__all__ = ["assign_frames_to_windows", "select_frames", "split_windows"]


def select_frames(n_total: int, num: int | None = None, stride: int | None = None, mode: str = "uniform") -> list[int]:
    """Choose which frames of an ``n_total``-frame clip to use.

    * ``mode="uniform"``: ``num`` indices spread evenly over the whole clip, first and last frame included
      (``round(linspace(0, n_total-1, num))``).  ``num=None`` or ``num >= n_total`` returns every frame (frames are
      never duplicated).
    * ``mode="stride"`` (implied whenever ``stride`` is given): every ``stride``-th frame starting at 0; with
      ``num`` the result is cut to the first ``num`` of those.
    * ``mode="first"``: the first ``num`` frames.

    Raises :class:`InputError` for invalid values (they usually come from CLI flags).
    """
    n_total = int(n_total)
    if n_total < 1:
        raise InputError(f"cannot select frames from an empty clip (n_total={n_total})")
    if num is not None and int(num) < 1:
        raise InputError(f"number of frames must be >= 1, got {num}")
    if stride is not None and int(stride) < 1:
        raise InputError(f"frame stride must be >= 1, got {stride}")
    if stride is not None:
        mode = "stride"
    if mode == "uniform":
        if num is None or num >= n_total:
            return list(range(n_total))
        if num == 1:
            return [0]
        idx = np.rint(np.linspace(0, n_total - 1, int(num))).astype(int).tolist()
        return sorted(set(idx))
    if mode == "stride":
        out = list(range(0, n_total, int(stride or 1)))
        return out if num is None else out[: int(num)]
    if mode == "first":
        return list(range(n_total if num is None else min(int(num), n_total)))
    raise InputError(f"unknown frame selection mode {mode!r} (expected 'uniform', 'stride' or 'first')")


def split_windows(n: int, window: int, overlap: int = 0) -> list[range]:
    """Split ``n`` frames into windows of ``window`` frames overlapping by ``overlap`` frames.

    Used when a clip is longer than the model's temporal window.  Windows start every ``window - overlap`` frames;
    the last window is shifted back so it ends exactly at ``n`` (every window then has the full length, and the last
    overlap may be larger than ``overlap``).  ``n <= window`` gives a single window ``range(0, n)``.

    Stitching: the windows are generated independently, so their Gaussians are *different sets* (different count,
    order and positions) - a linear cross-fade between two windows is not possible.  Instead each output frame is
    taken from the window in which it is most central (largest distance to that window's ends, see
    :func:`assign_frames_to_windows`); the overlap only gives both windows context around the cut.  Because the two
    windows can disagree (shape / pose / canonical placement), a visible seam (jump) may appear at the frame where the
    source window changes; a larger overlap gives each window more shared context but does not remove the seam.
    """
    n, window, overlap = int(n), int(window), int(overlap)
    if n < 1:
        raise InputError(f"cannot split an empty clip (n={n})")
    if window < 1:
        raise InputError(f"window must be >= 1, got {window}")
    if not 0 <= overlap < window:
        raise InputError(f"overlap must satisfy 0 <= overlap < window ({window}), got {overlap}")
    if n <= window:
        return [range(0, n)]
    step = window - overlap
    starts = list(range(0, n - window + 1, step))
    if starts[-1] + window < n:
        starts.append(n - window)
    return [range(s, s + window) for s in starts]


def assign_frames_to_windows(n: int, windows: Sequence[range]) -> list[tuple[int, int]]:
    """For every frame ``0..n-1`` return ``(window_index, index_within_window)`` of the window where the frame is
    most central (max of ``min(t - start, stop - 1 - t)``; ties go to the earlier window).  See
    :func:`split_windows`."""
    out = []
    for t in range(n):
        best, best_score = None, None
        for wi, w in enumerate(windows):
            if w.start <= t < w.stop:
                score = min(t - w.start, w.stop - 1 - t)
                if best_score is None or score > best_score:
                    best, best_score = wi, score
        if best is None:
            raise ValueError(f"frame {t} is not covered by any window")
        out.append((best, t - windows[best].start))
    return out
