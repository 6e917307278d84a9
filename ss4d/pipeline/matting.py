"""Foreground matting for RGB input clips.

SS4D needs RGBA frames.  Inputs that already carry alpha are used as is; for RGB videos of an object in front of a
*plain* background (a "matted" clip composited over white / black / a flat colour, or a green screen) the alpha is
recovered here:

1. :func:`estimate_background` - the background colour, a robust estimate from the frame borders of the whole clip
   (mode of a coarse colour histogram of the border pixels, refined by the median of the border pixels close to it);
2. :func:`key_matte` - colour-distance key: distance to the background colour mapped to a soft alpha with a ramp
   whose thresholds adapt to the noise level of the background; tiny speckles are removed and tiny holes filled;
3. :func:`refine_grabcut` - optional OpenCV GrabCut refinement initialised from the key (sure-foreground /
   sure-background bands around the key's boundary; run at <= 512 px and upsampled, so it costs ~0.3 s a frame);
4. :func:`smooth_masks` - temporal median over a small window, applied only where the per-frame evidence is
   uncertain (so fast thin parts - wing tips - that are confidently keyed are not erased by the median);
5. :func:`matte_clip` - the whole thing, plus user-supplied masks (:func:`load_masks`) and colour decontamination
   (the background colour mixed into edge pixels is removed: ``F = (C - (1 - a) B) / a``).

The CLI exposes ``mode="auto" | "key" | "alpha" | "none"`` and ``masks=<folder>``.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from ss4d.errors import InputError

__all__ = [
    "estimate_background",
    "background_model",
    "key_matte",
    "refine_grabcut",
    "smooth_masks",
    "load_masks",
    "matte_clip",
    "frames_have_alpha",
]

MODES = ("auto", "key", "alpha", "none")


def _frames_list(frames) -> list[np.ndarray]:
    if hasattr(frames, "frames") and not isinstance(frames, np.ndarray):  # a media.read.Clip
        frames = frames.frames
    out = [np.asarray(f) for f in frames]
    if not out:
        raise InputError("no frames to matte")
    for f in out:
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] not in (3, 4):
            raise ValueError(f"frames must be uint8 HxWx3 / HxWx4 arrays, got {f.dtype} {f.shape}")
    if any(f.shape[:2] != out[0].shape[:2] for f in out):
        raise InputError("all frames of a clip must have the same size")
    return out


def frames_have_alpha(frames) -> bool:
    """True when any frame is RGBA with an alpha that is not 255 everywhere."""
    return any(f.shape[2] == 4 and int(f[..., 3].min()) < 255 for f in _frames_list(frames))


# ----------------------------------------------------------------------------------------------------------------
# background estimation
# ----------------------------------------------------------------------------------------------------------------

def _border_pixels(frames: list[np.ndarray], border: int | None = None, max_frames: int = 24) -> np.ndarray:
    h, w = frames[0].shape[:2]
    b = border if border is not None else max(2, round(0.02 * min(h, w)))
    b = max(1, min(b, h // 2, w // 2))
    sel = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int))
    px = []
    for i in sel:
        f = frames[i][..., :3]
        px += [f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[b:-b, :b].reshape(-1, 3), f[b:-b, -b:].reshape(-1, 3)]
    return np.concatenate(px).astype(np.float32)


def background_model(frames, border: int | None = None) -> tuple[np.ndarray, float, float]:
    """``(colour[3] float32, noise_sigma, coverage)`` of the plain background.

    ``colour``: robust estimate from the border pixels of (up to 24 evenly spread) frames - the fullest cell of a
    coarse 3-D colour histogram (smoothed over neighbouring cells, so a colour on a cell boundary is not split),
    refined twice by the per-channel median of the border pixels within 40 levels of the current estimate.
    ``noise_sigma``: robust per-channel std (1.4826 MAD) of those background pixels.
    ``coverage``: fraction of border pixels within 40 levels of ``colour`` (low = the background is not plain or
    the object covers much of the border).
    """
    fr = _frames_list(frames)
    px = _border_pixels(fr, border)
    q = np.clip((px // 16).astype(np.int64), 0, 15)
    cells = (q[:, 0] * 16 + q[:, 1]) * 16 + q[:, 2]
    hist = np.bincount(cells, minlength=16 ** 3).reshape(16, 16, 16).astype(np.float64)
    hist = ndimage.uniform_filter(hist, size=3, mode="constant")
    c = np.array(np.unravel_index(int(np.argmax(hist)), hist.shape), np.float32) * 16 + 8
    near = np.ones(len(px), bool)
    for _ in range(3):
        near = np.linalg.norm(px - c, axis=1) < 40.0
        if near.sum() < 8:
            break
        c = np.median(px[near], axis=0).astype(np.float32)
    bgpx = px[near] if near.sum() >= 8 else px
    mad = np.median(np.abs(bgpx - np.median(bgpx, axis=0)), axis=0)
    sigma = float(np.median(mad) * 1.4826)
    coverage = float((np.linalg.norm(px - c, axis=1) < 40.0).mean())
    return c.astype(np.float32), sigma, coverage


def estimate_background(frames, border: int | None = None) -> np.ndarray:
    """Background colour (``float32[3]``, RGB 0..255) estimated from the frame borders over the whole clip.

    Warns when fewer than 60 % of the border pixels are close to it (the background does not look plain).
    See :func:`background_model`."""
    colour, _, coverage = background_model(frames, border)
    if coverage < 0.6:
        warnings.warn(f"the frame borders do not look like a plain background (only {coverage:.0%} of border pixels "
                      f"match colour {np.round(colour).astype(int).tolist()}); colour keying may fail - provide "
                      f"RGBA frames or masks", stacklevel=2)
    return colour


# ----------------------------------------------------------------------------------------------------------------
# colour key
# ----------------------------------------------------------------------------------------------------------------

def _key_thresholds(sigma: float) -> tuple[float, float]:
    low = max(10.0, 4.5 * sigma)
    return low, low + max(20.0, 3.0 * sigma)


def _distance(frame: np.ndarray, bg: np.ndarray) -> np.ndarray:
    d = frame[..., :3].astype(np.float32) - np.asarray(bg, np.float32)
    return np.sqrt((d * d).sum(-1))


def _clean_binary(fg: np.ndarray, min_area: int, max_hole: int) -> np.ndarray:
    """Drop foreground components smaller than ``min_area`` and fill background holes (not touching the image
    border) smaller than ``max_hole`` pixels."""
    fg = fg.copy()
    if min_area > 0:
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < min_area) + 1
        if len(small):
            fg[np.isin(lab, small)] = False
    if max_hole > 0:
        n, lab, stats, _ = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)
        h, w = fg.shape
        x0, y0 = stats[1:, cv2.CC_STAT_LEFT], stats[1:, cv2.CC_STAT_TOP]
        x1, y1 = x0 + stats[1:, cv2.CC_STAT_WIDTH], y0 + stats[1:, cv2.CC_STAT_HEIGHT]
        inner = (x0 > 0) & (y0 > 0) & (x1 < w) & (y1 < h) & (stats[1:, cv2.CC_STAT_AREA] <= max_hole)
        holes = np.flatnonzero(inner) + 1
        if len(holes):
            fg[np.isin(lab, holes)] = True
    return fg


def key_matte(frames, bg=None, *, low: float | None = None, high: float | None = None, clean: bool = True,
              min_area_frac: float = 2e-4, max_hole_frac: float = 1e-3) -> list[np.ndarray]:
    """Colour-distance key: soft masks (``float32`` HxW in [0, 1]) for every frame.

    ``alpha = clip((|C - bg| - low) / (high - low), 0, 1)`` with the Euclidean RGB distance.  ``low``/``high``
    default to thresholds derived from the background noise (``low = max(10, 4.5 sigma)``,
    ``high = low + max(20, 3 sigma)``).  With ``clean``, foreground specks smaller than ``min_area_frac`` of the
    frame and enclosed holes smaller than ``max_hole_frac`` of the frame (highlights on the object that happen to
    match the background colour) are fixed on the binarised mask.
    """
    fr = _frames_list(frames)
    colour, sigma, _ = background_model(fr)
    bg = colour if bg is None else np.asarray(bg, np.float32).reshape(3)
    lo, hi = _key_thresholds(sigma)
    lo = lo if low is None else float(low)
    hi = hi if high is None else float(high)
    if not hi > lo:
        raise ValueError(f"key thresholds need high > low, got low={lo} high={hi}")
    h, w = fr[0].shape[:2]
    min_area, max_hole = int(min_area_frac * h * w), int(max_hole_frac * h * w)
    out = []
    for f in fr:
        a = np.clip((_distance(f, bg) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        if clean:
            fg = a >= 0.5
            fixed = _clean_binary(fg, min_area, max_hole)
            a[fg & ~fixed] = 0.0
            a[fixed & ~fg] = 1.0
        out.append(a)
    return out


# ----------------------------------------------------------------------------------------------------------------
# GrabCut refinement
# ----------------------------------------------------------------------------------------------------------------

def refine_grabcut(frame: np.ndarray, mask: np.ndarray, *, band: int | None = None, iters: int = 3,
                   max_side: int = 512) -> np.ndarray:
    """Refine a key mask with OpenCV GrabCut; returns a ``float32`` HxW mask in [0, 1].

    The key (binarised at 0.5) initialises GrabCut: pixels deeper than ``band`` pixels inside it are sure
    foreground, pixels farther than ``band`` outside it sure background, the band in between is "probable" (fg or
    bg after the key).  GrabCut runs on a copy downscaled to ``max_side`` (INTER_AREA; nearest for the trimap) and
    its binary result is upsampled bilinearly.  Where GrabCut agrees with the key, the key's soft alpha is kept
    (better edges); where it flips the decision, the upsampled GrabCut value is used.  Masks without sure fg or sure
    bg pixels (nothing to learn from) are returned unchanged.
    """
    mask = np.asarray(mask, np.float32)
    if mask.max(initial=0) > 1.0:
        mask = mask / 255.0
    h, w = mask.shape
    s = min(1.0, max_side / max(h, w))
    sw, sh = max(1, round(w * s)), max(1, round(h * s))
    img = np.ascontiguousarray(frame[..., :3][..., ::-1])  # OpenCV wants BGR
    key = mask >= 0.5
    if s < 1.0:
        img = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        key_s = cv2.resize(key.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        key_s = key
    r = band if band is not None else max(3, round(0.01 * max(sw, sh)))
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    sure_fg = cv2.erode(key_s.astype(np.uint8), ker, borderType=cv2.BORDER_REPLICATE).astype(bool)
    sure_bg = ~cv2.dilate(key_s.astype(np.uint8), ker, borderType=cv2.BORDER_REPLICATE).astype(bool)
    if not sure_fg.any() or not sure_bg.any():
        return mask.copy()
    gc = np.where(key_s, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[sure_fg] = cv2.GC_FGD
    gc[sure_bg] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(img, gc, None, bgd, fgd, int(iters), cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return mask.copy()
    ref = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.float32)
    if s < 1.0:
        ref = np.clip(cv2.resize(ref, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    flipped = (ref >= 0.5) != key
    return np.where(flipped, ref, mask).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# temporal smoothing
# ----------------------------------------------------------------------------------------------------------------

def smooth_masks(masks: Sequence[np.ndarray], window: int = 3,
                 confidence: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Temporal median of masks over ``window`` frames (odd; edges replicated).

    With ``confidence`` (per-frame arrays in [0, 1]) the result is ``c * mask + (1 - c) * median`` so confident
    pixels keep their own value and only uncertain ones follow their neighbours in time.  ``window <= 1`` returns
    copies.
    """
    ms = [np.asarray(m, np.float32) for m in masks]
    n = len(ms)
    if window <= 1 or n < 2:
        return [m.copy() for m in ms]
    r = window // 2
    out = []
    for t in range(n):
        stack = np.stack([ms[min(max(k, 0), n - 1)] for k in range(t - r, t + r + 1)])
        med = np.median(stack, axis=0)
        if confidence is not None:
            c = np.clip(np.asarray(confidence[t], np.float32), 0.0, 1.0)
            med = c * ms[t] + (1.0 - c) * med
        out.append(med.astype(np.float32))
    return out


# ----------------------------------------------------------------------------------------------------------------
# user masks
# ----------------------------------------------------------------------------------------------------------------

def load_masks(source, n: int | None = None, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """Load user masks: a folder of images (naturally sorted, like frame folders), a list of paths or a list of
    arrays.  Returns ``uint8`` HxW masks (0 = background, 255 = object; soft values kept; 0/1 masks are scaled to
    0/255).  An image with a non-trivial alpha channel contributes its alpha, otherwise its luminance.

    ``n``: required number of masks; ``size``: required ``(height, width)``.  Mismatches raise :class:`InputError`.
    """
    from ..media.read import _load_image, list_images

    label = str(source) if isinstance(source, (str, os.PathLike)) else "mask list"
    if isinstance(source, (str, os.PathLike)):
        p = Path(source).expanduser()
        if not p.exists():
            raise InputError(f"mask folder not found: {p}")
        if not p.is_dir():
            raise InputError(f"masks must be a folder of grayscale images, got file {p}")
        items = list_images(p)
        if not items:
            raise InputError(f"no mask images found in {p}")
    else:
        items = list(source)
    masks, names = [], []
    for it in items:
        if isinstance(it, np.ndarray):
            a, name = it, f"mask #{len(masks)}"
            if a.ndim == 3:
                a = a[..., 3] if a.shape[2] == 4 else a[..., :3].mean(-1)
        else:
            name = Path(it).name
            im = _load_image(Path(it))
            if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
                alpha = np.asarray(im.convert("RGBA"))[..., 3]
                a = alpha if alpha.min() < 255 else np.asarray(im.convert("L"))
            elif im.mode in ("I", "I;16", "I;16L", "I;16B", "F"):
                a = np.asarray(im, np.float64)
                a = a / 257.0 if a.max(initial=0) > 255 else a
            else:
                a = np.asarray(im.convert("L"))
        a = np.asarray(a)
        if a.dtype == bool:
            a = a.astype(np.uint8) * 255
        a = np.asarray(a, np.float64)
        if a.max(initial=0) <= 1.0 and a.size:
            a = a * 255.0
        masks.append(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        names.append(name)
    if n is not None and len(masks) != n:
        raise InputError(f"{label}: found {len(masks)} masks but the clip has {n} frames; provide one mask per frame")
    want = size if size is not None else masks[0].shape
    for m, name in zip(masks, names):
        if m.shape != tuple(want):
            raise InputError(f"{label}: mask {name} is {m.shape[1]}x{m.shape[0]} but frames are {want[1]}x{want[0]}")
    return masks


# ----------------------------------------------------------------------------------------------------------------
# whole clip
# ----------------------------------------------------------------------------------------------------------------

def _decontaminate(rgb: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Remove the background colour mixed into semi-transparent pixels: ``F = (C - (1 - a) B) / a``."""
    c = rgb.astype(np.float32)
    a = alpha[..., None]
    f = (c - (1.0 - a) * bg) / np.maximum(a, 1e-3)
    f = np.where(a > 0.02, f, c)
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


def _to_rgba(rgb: np.ndarray, alpha01_or_u8: np.ndarray) -> np.ndarray:
    a = alpha01_or_u8
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    return np.concatenate([rgb[..., :3], a[..., None]], axis=2)


def matte_clip(frames, mode: str = "auto", masks=None, *, refine: bool = True, smooth: int = 3, bg=None,
               decontaminate: bool = True) -> list[np.ndarray]:
    """Return RGBA ``uint8`` frames for a clip.

    ``mode``:
      * ``"auto"``  - the clip's own alpha if it has one, else ``"key"``;
      * ``"alpha"`` - the clip's own alpha (InputError if the frames have none);
      * ``"key"``   - colour key against the estimated plain background (:func:`key_matte`), GrabCut refinement
        (``refine``), confidence-weighted temporal median over ``smooth`` frames, colour decontamination;
      * ``"none"``  - alpha 255 everywhere (the whole frame is the object).
    ``masks`` (folder / list, see :func:`load_masks`) overrides ``mode``: one mask per frame, same size as the
    frames, used as the alpha channel.  Raises :class:`InputError` when the result has no foreground at all.
    """
    if mode not in MODES:
        raise InputError(f"unknown matting mode {mode!r} (expected one of {', '.join(MODES)})")
    fr = _frames_list(frames)
    h, w = fr[0].shape[:2]
    if masks is not None:
        ms = load_masks(masks, n=len(fr), size=(h, w))
        out = [_to_rgba(f, m) for f, m in zip(fr, ms)]
        what = "the given masks are empty (all 0)"
    elif mode == "none":
        return [_to_rgba(f, np.full((h, w), 255, np.uint8)) for f in fr]
    elif mode == "alpha" or (mode == "auto" and frames_have_alpha(fr)):
        if not frames_have_alpha(fr):
            raise InputError("matting mode 'alpha' needs RGBA input, but the frames have no alpha channel; use "
                             "mode 'key' or provide masks")
        out = [f if f.shape[2] == 4 else _to_rgba(f, np.full((h, w), 255, np.uint8)) for f in fr]
        what = "every frame is fully transparent"
    else:
        colour, sigma, coverage = background_model(fr)
        if bg is None:
            if coverage < 0.3:
                raise InputError(f"cannot matte this clip: the background is not a plain colour (only {coverage:.0%} "
                                 f"of the frame borders match one colour); provide RGBA frames or a mask folder")
            if coverage < 0.6:
                warnings.warn(f"the frame borders are only {coverage:.0%} plain background colour "
                              f"{np.round(colour).astype(int).tolist()}; the key matte may be poor", stacklevel=2)
            bgc = colour
        else:
            bgc = np.asarray(bg, np.float32).reshape(3)
        lo, hi = _key_thresholds(sigma)
        keyed = key_matte(fr, bgc)
        alphas = [refine_grabcut(f, k) for f, k in zip(fr, keyed)] if refine else keyed
        if smooth and smooth > 1 and len(fr) > 1:
            mid, span = 0.5 * (lo + hi), hi - lo
            conf = []
            for f, k, a in zip(fr, keyed, alphas):
                c = np.clip(np.abs(_distance(f, bgc) - mid) / span, 0.0, 1.0)
                c[(a >= 0.5) != (k >= 0.5)] = 0.0  # decisions changed by GrabCut / clean-up are uncertain
                conf.append(c)
            alphas = smooth_masks(alphas, smooth, conf)
        out = []
        for f, a in zip(fr, alphas):
            rgb = _decontaminate(f[..., :3], a, bgc) if decontaminate else f[..., :3]
            out.append(_to_rgba(rgb, a))
        what = f"no foreground found against background colour {np.round(bgc).astype(int).tolist()}"
    if all(not o[..., 3].any() for o in out):
        raise InputError(f"matting produced an empty alpha for every frame: {what}")
    return out
