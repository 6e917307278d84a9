"""Tests for ss4d.pipeline.matting: background estimate, colour key + GrabCut, user masks, modes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ss4d.errors import InputError
from ss4d.media.read import read_frames
from ss4d.pipeline.matting import (
    _decontaminate,
    background_model,
    estimate_background,
    key_matte,
    load_masks,
    matte_clip,
    refine_grabcut,
    smooth_masks,
)

GREEN = np.array([40, 180, 70], np.float32)


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


def _disc_clip(n=6, h=120, w=160, sigma=6.0, seed=0, radius=28, start=(40, 60), step=(6, 2)):
    """A reddish disc (with shading) moving over a flat green background with Gaussian noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames, discs = [], []
    for t in range(n):
        cx, cy = start[0] + step[0] * t, start[1] + step[1] * t
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius ** 2
        img = np.empty((h, w, 3), np.float32)
        img[:] = GREEN
        shade = 0.75 + 0.25 * (xx - cx) / radius
        for c, v in enumerate((210, 50, 90)):
            img[..., c] = np.where(disc, v * shade, img[..., c])
        img += rng.normal(0, sigma, img.shape)
        frames.append(np.clip(np.rint(img), 0, 255).astype(np.uint8))
        discs.append(disc)
    return frames, discs


def test_estimate_background_green_screen():
    frames, _ = _disc_clip()
    bg = estimate_background(frames)
    assert np.abs(bg - GREEN).max() < 3
    colour, sigma, coverage = background_model(frames)
    assert 4 < sigma < 8 and coverage > 0.95


def test_estimate_background_object_touching_border():
    # object covers the whole left border and the top/bottom edges partly: the mode still finds the background
    frames, _ = _disc_clip(radius=70, start=(10, 60), step=(0, 0), n=3)
    with pytest.warns(UserWarning, match="plain background"):
        bg = estimate_background(frames, border=30)
    assert np.abs(bg - GREEN).max() < 3
    assert np.abs(estimate_background(frames) - GREEN).max() < 3


def test_key_and_grabcut_recover_moving_disc():
    frames, discs = _disc_clip()
    keys = key_matte(frames)
    for k, d in zip(keys, discs):
        assert k.dtype == np.float32 and 0 <= k.min() and k.max() <= 1
        assert _iou(k >= 0.5, d) > 0.95
    for f, k, d in zip(frames[:2], keys[:2], discs[:2]):
        assert _iou(refine_grabcut(f, k) >= 0.5, d) > 0.95
    rgba = matte_clip(frames, mode="auto")
    assert len(rgba) == len(frames)
    for o, d in zip(rgba, discs):
        assert o.shape == frames[0].shape[:2] + (4,) and o.dtype == np.uint8
        assert _iou(o[..., 3] >= 128, d) > 0.95


def test_grabcut_downscales_large_frames():
    frames, discs = _disc_clip(n=1, h=700, w=900, radius=150, start=(400, 350), sigma=4)
    k = key_matte(frames)[0]
    r = refine_grabcut(frames[0], k, max_side=256)
    assert r.shape == (700, 900) and _iou(r >= 0.5, discs[0]) > 0.97


@pytest.mark.parametrize("name", ["000000_fg.mp4", "blooming_rose_fg.mp4", "cat_king_fg.mp4", "lifting1_fg.mp4",
                                  "otter-on-surfboard_fg.mp4"])
def test_real_videos_match_luminance_reference(shared, name):
    clip = read_frames(shared / "data" / "videos" / name, max_frames=2)
    bg = estimate_background(clip.frames)
    assert np.abs(bg - 255).max() <= 2  # these clips are composited over white
    rgba = matte_clip(clip.frames, mode="auto")
    for f, o in zip(clip.frames, rgba):
        # simple reference for "object over white": darker than the background by more than 20 levels
        ref = (255 - f.min(axis=2).astype(int)) > 20
        assert _iou(o[..., 3] >= 128, ref) > 0.9


def test_smooth_masks_keeps_confident_pixels():
    m = [np.zeros((4, 4), np.float32) for _ in range(3)]
    m[1][1, 1] = 1.0  # a blip in a single frame
    assert smooth_masks(m, 3)[1][1, 1] == 0.0
    conf = [np.ones((4, 4), np.float32) for _ in range(3)]
    assert smooth_masks(m, 3, conf)[1][1, 1] == 1.0
    assert smooth_masks(m, 1)[1][1, 1] == 1.0
    # edges are replicated: the first frame is its own majority
    m2 = [np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)]
    assert smooth_masks(m2, 3)[0].min() == 1.0


def test_decontaminate_removes_background_colour():
    fg = np.array([200, 30, 40], np.float32)
    a = np.full((1, 1), 0.5, np.float32)
    mixed = np.rint(0.5 * fg + 0.5 * GREEN).astype(np.uint8)[None, None]
    out = _decontaminate(mixed, a, GREEN)
    assert np.abs(out[0, 0].astype(int) - fg).max() <= 2


def test_modes():
    frames, discs = _disc_clip(n=3)
    none = matte_clip(frames, mode="none")
    assert all((o[..., 3] == 255).all() for o in none)
    np.testing.assert_array_equal(none[0][..., :3], frames[0])
    with pytest.raises(InputError, match="alpha"):
        matte_clip(frames, mode="alpha")
    with pytest.raises(InputError, match="mode"):
        matte_clip(frames, mode="magic")
    rgba = [np.concatenate([f, (d * 255).astype(np.uint8)[..., None]], axis=2) for f, d in zip(frames, discs)]
    for mode in ("auto", "alpha"):
        out = matte_clip(rgba, mode=mode)
        for o, r in zip(out, rgba):
            np.testing.assert_array_equal(o, r)
    key = matte_clip(frames, mode="key", refine=False, smooth=1)
    assert _iou(key[0][..., 3] >= 128, discs[0]) > 0.95


def test_non_plain_background_is_rejected():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    with pytest.raises(InputError, match="plain"):
        matte_clip(frames)


def test_empty_key_is_rejected():
    frames = [np.full((32, 32, 3), 255, np.uint8) for _ in range(2)]
    with pytest.raises(InputError, match="empty alpha"):
        matte_clip(frames, mode="key")


def test_user_masks(tmp_path):
    frames, discs = _disc_clip(n=3)
    mdir = tmp_path / "masks"
    mdir.mkdir()
    for i, d in enumerate(discs):  # natural order: 0..2, saved as 8-bit grayscale
        Image.fromarray((d * 255).astype(np.uint8), "L").save(mdir / f"m{i}.png")
    out = matte_clip(frames, masks=mdir)
    for o, d, f in zip(out, discs, frames):
        np.testing.assert_array_equal(o[..., 3], (d * 255).astype(np.uint8))
        np.testing.assert_array_equal(o[..., :3], f)
    # 0/1 arrays are scaled to 0/255
    ms = load_masks([d.astype(np.uint8) for d in discs])
    assert ms[0].max() == 255
    # count / size / missing folder errors
    with pytest.raises(InputError, match="3 masks but the clip has 2 frames"):
        matte_clip(frames[:2], masks=mdir)
    small = tmp_path / "small"
    small.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(small / f"{i}.png")
    with pytest.raises(InputError, match="10x10"):
        matte_clip(frames, masks=small)
    with pytest.raises(InputError, match="not found"):
        matte_clip(frames, masks=tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros(frames[0].shape[:2], np.uint8)).save(empty / f"{i}.png")
    with pytest.raises(InputError, match="empty"):
        matte_clip(frames, masks=empty)


@pytest.mark.parametrize("bg", [(0, 0, 0), (128, 128, 128), (255, 255, 255)])
def test_rgba_clip_composited_on_flat_colour_recovers_alpha(shared, bg):
    """Ground truth from a real RGBA clip: composite it over a flat colour, matte it, compare with its alpha."""
    clip = read_frames(shared / "data" / "clips" / "pecking_blue_jay", indices=[0, 20])
    comp = [np.rint(f[..., :3] * (f[..., 3:] / 255.0) + np.array(bg) * (1 - f[..., 3:] / 255.0)).astype(np.uint8)
            for f in clip.frames]
    assert np.abs(estimate_background(comp) - np.array(bg)).max() <= 2
    out = matte_clip(comp)
    for o, f in zip(out, clip.frames):
        assert _iou(o[..., 3] >= 128, f[..., 3] >= 128) > 0.95
