"""Conditioning-video augmentations: determinism, semantics, composition, documentation images."""
from __future__ import annotations

import pytest
import torch
from test_train_helpers import one_thread  # noqa: F401 (autouse fixture)

from ss4d.train import augment as A


def _sphere(T, size):
    ys = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(ys, ys, indexing="ij")
    out = []
    for t in range(T):
        m = (((xx - 0.3 - 0.4 * t / (T - 1)) ** 2 + (yy - 0.5) ** 2) < 0.04).float()
        out.append(torch.stack([0.9 * m, 0.5 * m, 0.2 * m]))
    return torch.stack(out)


CASES = {
    "occluder": lambda c, g: A.moving_occluder(c, g, min_frames=3),
    "blur_subframe": lambda c, g: A.motion_blur(c, g, "subframe"),
    "blur_kernel": lambda c, g: A.motion_blur(c, g, "kernel"),
    "jitter": lambda c, g: A.color_jitter(c, g),
    "drop": lambda c, g: A.frame_drop(c, g, p=0.5),
    "composed": lambda c, g: A.VideoAugment({k: {"p": 1.0} for k in A.DEFAULTS})(c, g),
}


@pytest.mark.parametrize("name", list(CASES))
def test_deterministic_given_generator(name):
    clip = _sphere(6, 24)
    fn = CASES[name]
    a = fn(clip, torch.Generator().manual_seed(3))
    b = fn(clip, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.shape == clip.shape and a.min() >= 0 and a.max() <= 1
    outs = [fn(clip, torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert torch.equal(clip, _sphere(6, 24))  # input untouched


def test_occluder_moves_over_consecutive_frames():
    clip = _sphere(8, 32)
    g = torch.Generator().manual_seed(1)
    out = A.moving_occluder(clip, g, min_frames=4, max_frames=4, size=(0.2, 0.2), textured_p=0.0)
    changed = [(out[t] != clip[t]).any().item() for t in range(8)]
    idx = [t for t, c in enumerate(changed) if c]
    assert len(idx) == 4 and idx == list(range(idx[0], idx[0] + 4))
    cents = []
    for t in idx:
        m = (out[t] != clip[t]).any(0).float()
        ys, xs = torch.nonzero(m, as_tuple=True)
        cents.append((xs.float().mean().item(), ys.float().mean().item()))
    moves = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in zip(cents, cents[1:])]
    assert all(mv > 0.5 for mv in moves)


def test_frame_drop_repeats_previous_frames():
    clip = torch.rand(10, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = A.frame_drop(clip, torch.Generator().manual_seed(2), p=0.5, max_run=2)
    assert torch.equal(out[0], clip[0])
    dropped = 0
    for t in range(1, 10):
        if torch.equal(out[t], clip[t]):
            continue
        assert torch.equal(out[t], out[t - 1])
        dropped += 1
    assert dropped > 0


def test_motion_blur_kernel_and_subframe():
    k = A.line_kernel(7, 0.3)
    assert k.shape == (7, 7) and k.sum().item() == pytest.approx(1.0) and (k >= 0).all()
    clip = _sphere(4, 16)
    flat = torch.full_like(clip, 0.4)
    torch.testing.assert_close(A.motion_blur(flat, torch.Generator().manual_seed(0), "kernel"), flat)
    same = A.motion_blur(clip, torch.Generator().manual_seed(0), "subframe", exposure=(0.0, 0.0))
    torch.testing.assert_close(same, clip)
    blurred = A.motion_blur(clip, torch.Generator().manual_seed(0), "subframe", exposure=(1.0, 1.0))
    # a long exposure lies between the frame and its successor
    torch.testing.assert_close(blurred[0], 0.5 * (clip[0] + clip[1]))


def test_color_jitter_keeps_black_background_dark_and_changes_colour():
    clip = _sphere(4, 16)
    out = A.color_jitter(clip, torch.Generator().manual_seed(5), 0.3, 0.0, 0.5, 0.1, 0.0)
    assert not torch.allclose(out, clip)
    bg = clip.sum(1) == 0
    assert out.permute(1, 0, 2, 3)[:, bg].abs().max() < 1e-5


def test_video_augment_config_errors_and_batch():
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.VideoAugment({"blurr": {}})
    with pytest.raises(ValueError, match="unknown option"):
        A.VideoAugment({"occluder": {"sizes": 1}})
    aug = A.VideoAugment({"occluder": {"p": 1.0}, "motion_blur": False, "color_jitter": False, "frame_drop": False})
    frames = torch.cat([_sphere(4, 16), _sphere(4, 16)])
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    out = aug.apply_batch(frames, 4, gens)
    assert out.shape == frames.shape
    assert torch.equal(out[:4], aug(frames[:4], torch.Generator().manual_seed(0)))


def test_example_images_script(tmp_path):
    paths = A.save_examples(tmp_path, T=3, size=24)
    assert len(paths) == 6 and all(p.stat().st_size > 0 for p in paths)
    from PIL import Image
    im = Image.open(paths[0])
    assert im.size == (3 * 24, 2 * 24)
