"""Rectified-flow training maths of TRELLIS (spec §6), with the 4D convention of one timestep and one
condition-drop decision per clip (shared by all its frames).

`x_t = (1 - t) x0 + (sigma + (1 - sigma) t) eps`, target `v = (1 - sigma) eps - x0`, model time `1000 t`,
`t ~ sigmoid(N(mean, std))` (released configs: mean 1, std 1), classifier-free-guidance training: with probability
`p_uncond` the whole condition of a clip is replaced by `neg_cond = 0`.

All random draws take an explicit `torch.Generator` (one per clip in the trainers) so that results do not depend
on how a global batch is split over processes and resume bit-identically.
"""
from __future__ import annotations

import torch

__all__ = ["SIGMA_MIN", "sample_t", "diffuse", "velocity_target", "drop_condition", "model_time",
           "predict_x0"]

SIGMA_MIN = 1e-5


def sample_t(generator: torch.Generator | None = None, n: int = 1, mean: float = 1.0, std: float = 1.0,
             dist: str = "logit_normal") -> torch.Tensor:
    """`n` timesteps in (0, 1): `sigmoid(N(mean, std))` ("logit_normal") or `U(0, 1)` ("uniform")."""
    if dist == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator) * std + mean)
    if dist == "uniform":
        return torch.rand(n, generator=generator)
    raise ValueError(f"unknown timestep distribution {dist!r} (use 'logit_normal' or 'uniform')")


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.reshape(t.shape + (1,) * (x.dim() - t.dim())) if t.dim() else t


def diffuse(x0: torch.Tensor, t, noise: torch.Tensor, sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """`x_t = (1 - t) x0 + (sigma + (1 - sigma) t) noise`; `t` scalar or one value per leading row."""
    t = _bcast(t, x0)
    return (1 - t) * x0 + (sigma_min + (1 - sigma_min) * t) * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor, sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """`v = (1 - sigma) noise - x0`."""
    return (1 - sigma_min) * noise - x0


def predict_x0(x_t: torch.Tensor, t, v: torch.Tensor, sigma_min: float = SIGMA_MIN) -> torch.Tensor:
    """`x0 = (1 - sigma) x_t - (sigma + (1 - sigma) t) v` (the sampler's read-out)."""
    t = _bcast(t, x_t)
    return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v


def model_time(t_clip: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Per-clip `t [B]` -> model input `1000 t` repeated for each frame `[B*T]` (float32)."""
    return (1000.0 * t_clip.float()).repeat_interleave(num_frames)


def drop_condition(cond: torch.Tensor, drop: torch.Tensor, num_frames: int,
                   neg_cond: torch.Tensor | None = None) -> torch.Tensor:
    """Replace the condition of the frames of every dropped clip (`drop [B]` bool) by `neg_cond`
    (zeros by default). `cond [B*T, L, C]`."""
    keep = (~drop.bool()).repeat_interleave(num_frames).to(cond.device)
    keep = keep.view(-1, *([1] * (cond.dim() - 1))).to(cond.dtype)
    neg = torch.zeros_like(cond) if neg_cond is None else neg_cond.to(cond.dtype).expand_as(cond)
    return cond * keep + neg * (1 - keep)
