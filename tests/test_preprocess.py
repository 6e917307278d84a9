"""Tests for ss4d.pipeline.preprocess: the official SS4D crop/resize/premultiply and model-input tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ss4d.errors import InputError
from ss4d.pipeline.preprocess import (
    alpha_bbox,
    crop_box_from_bbox,
    imagenet_normalize,
    preprocess_frames,
    to_model_input,
)


def _reference(frames, size=518):
    """Straightforward re-computation of the SS4D reference steps, written independently of the module."""
    alphas = np.stack([f[..., 3] for f in frames])
    _, ys, xs = np.nonzero(alphas)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    aug = max(x1 - x0, y1 - y0) / 2 * 1.2
    box = [int(cx - aug), int(cy - aug), int(cx + aug), int(cy + aug)]
    ims = [Image.fromarray(f).crop(box).resize((size, size), Image.Resampling.LANCZOS) for f in frames]
    arr = np.array(ims).astype(np.float32) / 255
    pm = arr[:, :, :, :3] * arr[:, :, :, 3:4]
    return (pm * 255).astype(np.uint8), np.array(ims)[..., 3], tuple(box)


def _load_rose(shared, idx):
    d = shared / "data" / "clips" / "rose"
    return [np.asarray(Image.open(d / f"{i}.png")) for i in idx]


def test_rose_union_bbox_and_crop_box(shared):
    frames = _load_rose(shared, range(32))
    assert alpha_bbox(frames) == (59, 124, 454, 465)  # documented in the shared data README
    # centre (256.5, 294.5), hsize 197.5, aug 237.0
    assert crop_box_from_bbox((59, 124, 454, 465)) == (19, 57, 493, 531)


def test_rose_matches_independent_reference(shared):
    frames = _load_rose(shared, [0, 7, 15, 31])
    rgb, alpha, box = preprocess_frames(frames)
    ref_rgb, ref_alpha, ref_box = _reference(frames)
    assert rgb.shape == (4, 518, 518, 3) and rgb.dtype == np.uint8
    assert alpha.shape == (4, 518, 518) and alpha.dtype == np.uint8
    assert box == ref_box
    np.testing.assert_array_equal(rgb, ref_rgb)
    np.testing.assert_array_equal(alpha, ref_alpha)
    # premultiplication: truncated float32 product is within one level of the rounded one
    rounded = np.rint(ref_rgb.astype(np.float64))
    lanczos = np.array([np.asarray(Image.fromarray(f).crop(box).resize((518, 518), Image.Resampling.LANCZOS))
                        for f in frames[:1]]).astype(np.float64)
    exact = lanczos[..., :3] * lanczos[..., 3:4] / 255
    assert np.abs(rounded[:1] - exact).max() <= 1.0 + 1e-9
    # transparent pixels are black, i.e. the object is composited over black
    assert (rgb[alpha == 0] == 0).all()


def test_object_touching_border_is_padded_with_transparent_zeros():
    h, w = 60, 80
    frames = []
    for t in range(3):
        f = np.zeros((h, w, 4), np.uint8)
        f[0:30 + t, 0:20] = (200, 100, 50, 255)  # touches the top and left border
        f[..., :3] += 5  # RGB junk in transparent pixels must not leak
        frames.append(f)
    rgb, alpha, box = preprocess_frames(frames, size=64)
    ref_rgb, ref_alpha, ref_box = _reference(frames, size=64)
    # bbox (0, 0, 19, 31): centre (9.5, 15.5), hsize 15.5, aug 18.6 -> int(-9.1) = -9 (truncation toward zero)
    assert box == ref_box == (-9, -3, 28, 34)
    np.testing.assert_array_equal(rgb, ref_rgb)
    np.testing.assert_array_equal(alpha, ref_alpha)
    # the part of the crop box left of the image (9 of 37 columns) is transparent and black, except where the
    # LANCZOS kernel (3 source pixels) reaches across the image edge
    cols = int(64 * (9 - 3) / 37)
    assert (alpha[:, :, :cols] == 0).all() and (rgb[:, :, :cols] == 0).all()
    assert alpha[:, 40, 30].min() == 255


def test_single_pixel_and_errors():
    f = np.zeros((10, 10, 4), np.uint8)
    f[5, 5] = 255
    rgb, alpha, box = preprocess_frames([f, np.zeros_like(f)], size=8)
    assert box == (5, 5, 5, 5) and rgb.shape == (2, 8, 8, 3)  # degenerate box: PIL gives an empty crop
    with pytest.raises(InputError, match="fully transparent"):
        preprocess_frames([np.zeros((10, 10, 4), np.uint8)] * 3)
    with pytest.raises(InputError, match="RGBA"):
        preprocess_frames([np.zeros((10, 10, 3), np.uint8)] * 2)
    with pytest.raises(InputError, match="same size"):
        preprocess_frames([np.full((10, 10, 4), 255, np.uint8), np.full((12, 10, 4), 255, np.uint8)])


def test_accepts_stacked_array_and_pil_images():
    f = np.zeros((3, 20, 20, 4), np.uint8)
    f[:, 5:15, 6:12] = 255
    a = preprocess_frames(f, size=32)
    b = preprocess_frames([Image.fromarray(x) for x in f], size=32)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[2] == b[2]


def test_to_model_input_and_normalize():
    frames = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    x = to_model_input(frames, 16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255)
    y = to_model_input(list(frames), 24)
    assert y.shape == (2, 3, 24, 24) and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    n = imagenet_normalize(torch.ones(2, 3, 4, 4))
    exp = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(n[1, :, 2, 3], exp)
    assert imagenet_normalize(torch.zeros(3, 2, 2)).shape == (3, 2, 2)
    with pytest.raises(ValueError):
        imagenet_normalize(torch.zeros(2, 4, 2, 2))
