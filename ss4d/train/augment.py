"""Augmentations of the conditioning video (`[T, 3, H, W]` in [0, 1]), deterministic given a `torch.Generator`.

* `moving_occluder`: an opaque shape (ellipse or rectangle, flat or textured colour) that slides across the
  object along a straight line over a run of consecutive frames (the in-the-wild case of a hand or a branch
  passing in front of the subject).
* `motion_blur`: either sub-frame averaging (each frame is the mean of `n` sub-frames linearly interpolated
  towards its neighbour, i.e. a longer exposure) or a directional line kernel (length, angle) applied per frame.
* `color_jitter`: brightness, contrast, saturation and hue changes shared by the whole clip, plus an optional
  small per-frame flicker.
* `frame_drop`: frames replaced by the previous (output) frame, as a stuttering video does.

`VideoAugment(config)` composes them with per-augmentation probabilities. Examples: `python -m ss4d.train.augment
--out docs/img` (see docs/augmentations.md).
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["moving_occluder", "motion_blur", "color_jitter", "frame_drop", "VideoAugment", "DEFAULTS"]


def _u(g, lo=0.0, hi=1.0) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g))


def _check(frames: torch.Tensor) -> None:
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"augmentations expect a clip [T, 3, H, W], got {tuple(frames.shape)}")


# ----------------------------------------------------------------------------------------------------------------
def moving_occluder(frames: torch.Tensor, g: torch.Generator, min_frames: int = 2, max_frames: int | None = None,
                    size=(0.15, 0.35), shapes=("ellipse", "rectangle"), textured_p: float = 0.5,
                    softness: float = 0.01) -> torch.Tensor:
    """Slide one opaque occluder across the image centre over a run of `k in [min_frames, max_frames]`
    consecutive frames. `size` = range of the shape's half-extent as a fraction of the image side."""
    _check(frames)
    T, _, H, W = frames.shape
    max_frames = min(T, max_frames or T)
    k = int(torch.randint(min(min_frames, max_frames), max_frames + 1, (), generator=g))
    f0 = int(torch.randint(0, T - k + 1, (), generator=g))
    # straight path through a point near the centre, entering and leaving at opposite sides
    ang = _u(g, 0, 2 * math.pi)
    cx, cy = 0.5 + _u(g, -0.15, 0.15), 0.5 + _u(g, -0.15, 0.15)
    reach = _u(g, 0.3, 0.6)
    p0 = (cx - reach * math.cos(ang), cy - reach * math.sin(ang))
    p1 = (cx + reach * math.cos(ang), cy + reach * math.sin(ang))
    rx, ry = _u(g, *size), _u(g, *size)
    rot = _u(g, 0, math.pi)
    shape = shapes[int(torch.randint(0, len(shapes), (), generator=g))]
    color = torch.rand(3, generator=g)
    if _u(g) < textured_p:
        tex = torch.rand(1, 3, 4, 4, generator=g)
        tex = F.interpolate(tex, size=(H, W), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        tex = 0.5 * tex + 0.5 * color.view(3, 1, 1)
    else:
        tex = color.view(3, 1, 1).expand(3, H, W)
    ys = (torch.arange(H, dtype=torch.float32) + 0.5) / H
    xs = (torch.arange(W, dtype=torch.float32) + 0.5) / W
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    out = frames.clone()
    for i in range(k):
        s = i / max(k - 1, 1)
        px, py = p0[0] + s * (p1[0] - p0[0]), p0[1] + s * (p1[1] - p0[1])
        dx, dy = xx - px, yy - py
        u = (dx * math.cos(rot) + dy * math.sin(rot)) / rx
        v = (-dx * math.sin(rot) + dy * math.cos(rot)) / ry
        d = (u * u + v * v).sqrt() if shape == "ellipse" else torch.maximum(u.abs(), v.abs())
        m = ((1 - d) / max(softness / min(rx, ry), 1e-6)).clamp(0, 1)
        f = f0 + i
        out[f] = frames[f] * (1 - m) + tex.to(frames.dtype) * m
    return out


# ----------------------------------------------------------------------------------------------------------------
def line_kernel(length: int, angle: float) -> torch.Tensor:
    """Normalised `[K, K]` line kernel (K = odd >= length) through the centre at `angle` (radians)."""
    K = max(1, int(length)) | 1
    ker = torch.zeros(K, K)
    c = (K - 1) / 2
    n = 4 * K
    for i in range(n):
        s = (i / (n - 1) - 0.5) * (length - 1)
        x, y = c + s * math.cos(angle), c + s * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for xi, yi, w in ((x0, y0, (1 - fx) * (1 - fy)), (x0 + 1, y0, fx * (1 - fy)), (x0, y0 + 1, (1 - fx) * fy),
                          (x0 + 1, y0 + 1, fx * fy)):
            if 0 <= xi < K and 0 <= yi < K:
                ker[yi, xi] += w
    return ker / ker.sum()


def motion_blur(frames: torch.Tensor, g: torch.Generator, mode: str | None = None, subframes: int = 5,
                exposure=(0.3, 1.0), length=(3, 9)) -> torch.Tensor:
    """`mode="subframe"`: frame t = mean over s in [0, e] (n samples) of lerp(frame_t, frame_{t+1}, s) — a long
    exposure of the (linearly interpolated) motion; `mode="kernel"`: one directional line kernel (random length
    in `length` px and angle) per clip; `None` picks one at random."""
    _check(frames)
    if mode is None:
        mode = "subframe" if _u(g) < 0.5 else "kernel"
    if mode == "subframe":
        T = frames.shape[0]
        if T < 2:
            return frames.clone()
        e = _u(g, *exposure)
        nxt = torch.cat([frames[1:], frames[-1:]], 0)
        prv = torch.cat([frames[:1], frames[:-1]], 0)
        # the last frame has no successor: blur it towards its predecessor instead
        target = torch.cat([nxt[:-1], prv[-1:]], 0)
        acc = torch.zeros_like(frames)
        for i in range(subframes):
            s = e * i / max(subframes - 1, 1)
            acc += (1 - s) * frames + s * target
        return acc / subframes
    if mode == "kernel":
        L = int(torch.randint(int(length[0]), int(length[1]) + 1, (), generator=g))
        ker = line_kernel(L, _u(g, 0, math.pi)).to(frames.dtype)
        K = ker.shape[0]
        w = ker.view(1, 1, K, K).expand(3, 1, K, K)
        x = F.pad(frames, (K // 2,) * 4, mode="replicate")
        return F.conv2d(x, w, groups=3)
    raise ValueError(f"unknown motion blur mode {mode!r} (use 'subframe' or 'kernel')")


# ----------------------------------------------------------------------------------------------------------------
def _hue_rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate colours around the grey axis by `angle` radians (YIQ rotation)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    m = (torch.linalg.inv(to_yiq) @ rot @ to_yiq).to(x.dtype)
    return torch.einsum("ij,tjhw->tihw", m, x)


def color_jitter(frames: torch.Tensor, g: torch.Generator, brightness: float = 0.2, contrast: float = 0.2,
                 saturation: float = 0.2, hue: float = 0.05, flicker: float = 0.02) -> torch.Tensor:
    """Clip-wide brightness / contrast / saturation factors in `[1 - a, 1 + a]` and a hue shift of up to
    `hue` turns, then a per-frame brightness flicker of up to `flicker`. Output clamped to [0, 1]."""
    _check(frames)
    x = frames * _u(g, 1 - brightness, 1 + brightness)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - grey.mean((2, 3), keepdim=True)) * _u(g, 1 - contrast, 1 + contrast) + grey.mean((2, 3), keepdim=True)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
    x = (x - grey) * _u(g, 1 - saturation, 1 + saturation) + grey
    if hue > 0:
        x = _hue_rotate(x, _u(g, -hue, hue) * 2 * math.pi)
    if flicker > 0:
        x = x * (1 + flicker * (2 * torch.rand(x.shape[0], 1, 1, 1, generator=g) - 1)).to(x.dtype)
    return x.clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------------
def frame_drop(frames: torch.Tensor, g: torch.Generator, p: float = 0.15, max_run: int = 2) -> torch.Tensor:
    """Each frame after the first is, with probability `p`, replaced by the previous output frame (runs of at
    most `max_run` repeats)."""
    _check(frames)
    out = frames.clone()
    run = 0
    for t in range(1, frames.shape[0]):
        if run < max_run and _u(g) < p:
            out[t] = out[t - 1]
            run += 1
        else:
            run = 0
    return out


# ----------------------------------------------------------------------------------------------------------------
DEFAULTS = {
    "occluder": {"p": 0.3, "min_frames": 2, "max_frames": None, "size": [0.15, 0.35], "textured_p": 0.5},
    "motion_blur": {"p": 0.3, "mode": None, "subframes": 5, "exposure": [0.3, 1.0], "length": [3, 9]},
    "color_jitter": {"p": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05, "flicker": 0.02},
    "frame_drop": {"p": 0.2, "p_frame": 0.15, "max_run": 2},
}


class VideoAugment:
    """Compose the augmentations: `config` maps a name of `DEFAULTS` to overrides (or `false` to disable);
    each is applied with its probability `p`, in the order colour -> blur -> occluder -> frame drop.
    `__call__(frames [T,3,H,W], generator)`; `apply_batch(frames [B*T,...], T, generators)` per clip."""

    ORDER = ("color_jitter", "motion_blur", "occluder", "frame_drop")

    def __init__(self, config: dict | None = None):
        config = dict(config or {})
        unknown = set(config) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown augmentation(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.cfg = {}
        for name, d in DEFAULTS.items():
            c = config.get(name, {})
            if c is False or c is None:
                continue
            if c is True:
                c = {}
            bad = set(c) - set(d)
            if bad:
                raise ValueError(f"augmentation {name!r}: unknown option(s) {sorted(bad)}; known: {sorted(d)}")
            self.cfg[name] = {**d, **c}

    def __call__(self, frames: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        x = frames
        for name in self.ORDER:
            if name not in self.cfg:
                continue
            c = dict(self.cfg[name])
            if _u(g) >= c.pop("p"):
                continue
            if name == "color_jitter":
                x = color_jitter(x, g, **c)
            elif name == "motion_blur":
                x = motion_blur(x, g, c["mode"], c["subframes"], tuple(c["exposure"]), tuple(c["length"]))
            elif name == "occluder":
                x = moving_occluder(x, g, c["min_frames"], c["max_frames"], tuple(c["size"]),
                                    textured_p=c["textured_p"])
            elif name == "frame_drop":
                x = frame_drop(x, g, c["p_frame"], c["max_run"])
        return x

    def apply_batch(self, frames: torch.Tensor, num_frames: int, generators) -> torch.Tensor:
        clips = frames.view(-1, num_frames, *frames.shape[1:])
        return torch.cat([self(c, gen) for c, gen in zip(clips, generators)], 0)


# ----------------------------------------------------------------------------------------------------------------
def _example_clip(T: int = 8, size: int = 128) -> torch.Tensor:
    """A premultiplied clip for the documentation: the shared `rose` clip if present, else a moving sphere."""
    try:
        from PIL import Image

        from ..testing import shared_dir
        d = shared_dir()
        if d is not None and (d / "data" / "clips" / "rose").is_dir():
            frames = []
            for i in range(0, 32, 32 // T):
                im = Image.open(d / "data" / "clips" / "rose" / f"{i}.png").convert("RGBA").resize((size, size))
                a = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()) / 255
                frames.append((a[..., :3] * a[..., 3:]).permute(2, 0, 1))
            return torch.stack(frames[:T])
    except Exception:  # noqa: BLE001 - documentation helper, fall back to the synthetic clip
        pass
    ys = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(ys, ys, indexing="ij")
    out = []
    for t in range(T):
        cx = 0.3 + 0.4 * t / max(T - 1, 1)
        d = ((xx - cx) ** 2 + (yy - 0.5) ** 2).sqrt()
        m = (d < 0.2).float()
        shade = (1 - d / 0.2).clamp(0, 1) ** 0.5
        out.append(torch.stack([0.9 * shade * m, 0.4 * shade * m, 0.2 * m]))
    return torch.stack(out)


def save_examples(out_dir, seed: int = 0, T: int = 8, size: int = 128) -> list[Path]:
    """Write one strip PNG per augmentation (top row original, bottom row augmented) to `out_dir`."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clip = _example_clip(T, size)
    cases = {
        "occluder": lambda g: moving_occluder(clip, g, min_frames=4, max_frames=6),
        "motion_blur_subframe": lambda g: motion_blur(clip, g, "subframe", exposure=(1.0, 1.0)),
        "motion_blur_kernel": lambda g: motion_blur(clip, g, "kernel", length=(9, 9)),
        "color_jitter": lambda g: color_jitter(clip, g, 0.3, 0.3, 0.5, 0.1, 0.05),
        "frame_drop": lambda g: frame_drop(clip, g, p=0.4),
        "composed": lambda g: VideoAugment({k: {"p": 1.0} for k in DEFAULTS})(clip, g),
    }
    paths = []
    for name, fn in cases.items():
        g = torch.Generator().manual_seed(seed)
        aug = fn(g)
        strip = torch.cat([torch.cat(list(clip), 2), torch.cat(list(aug), 2)], 1)
        arr = (strip.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).contiguous().numpy()
        p = out_dir / f"augment_{name}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def main(argv=None):
    ap = argparse.ArgumentParser(description="write example images of the conditioning-video augmentations")
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    a = ap.parse_args(argv)
    for p in save_examples(a.out, a.seed, a.frames, a.size):
        print(p)


if __name__ == "__main__":
    main()
