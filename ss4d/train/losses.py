"""Training losses of the TRELLIS recipe (spec §6), written for per-clip reduction.

Every loss takes an optional `dims` / works on one clip's tensors so the trainers can average per-clip values:
a per-clip mean keeps the result independent of how a global batch is split over processes (DDP) and of the
number of voxels of the other clips in the batch.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["dice_loss", "kl_loss", "l1_loss", "mse_loss", "gaussian_window", "ssim", "ssim_reference",
           "gaussian_regularizers", "LPIPSHook", "lpips_loss"]


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """`1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)` with `p = sigmoid(logits)`, summed over all elements
    (TRELLIS `SparseStructureVaeTrainer`; call it per clip for a per-clip value)."""
    p = torch.sigmoid(logits.float())
    y = target.to(p.dtype).reshape(p.shape)
    inter = (p * y).sum()
    return 1.0 - (2.0 * inter + smooth) / (p.sum() + y.sum() + smooth)


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """`0.5 * mean(mu^2 + exp(logvar) - logvar - 1)` (KL to N(0, I), averaged over all elements)."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * torch.mean(mean.square() + logvar.exp() - logvar - 1.0)


def l1_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.float() - y.float()).abs().mean()


def mse_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x.float() - y.float()).square().mean()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1D Gaussian `[size]` centred on the middle tap."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype=dtype, device=device)


def ssim(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5, c1: float = 0.01**2,
         c2: float = 0.03**2, reduction: str = "mean") -> torch.Tensor:
    """SSIM of images `[B, C, H, W]` (or `[C, H, W]`) in [0, 1] with an 11x11 Gaussian window (sigma 1.5),
    zero padding of `window_size // 2` (the 3DGS / TRELLIS `ssim`): separable depthwise convolutions.

    `reduction`: "mean" (scalar), "none" (SSIM map `[B, C, H, W]`) or "batch" (per image `[B]`)."""
    if img1.shape != img2.shape:
        raise ValueError(f"ssim: shapes differ {tuple(img1.shape)} vs {tuple(img2.shape)}")
    squeeze = img1.dim() == 3
    if squeeze:
        img1, img2 = img1[None], img2[None]
    x, y = img1.float(), img2.float()
    ch = x.shape[1]
    g = gaussian_window(window_size, sigma, x.dtype, x.device)
    pad = window_size // 2
    n = 5 * ch
    kx = g.view(1, 1, 1, -1).expand(n, 1, 1, window_size)
    ky = g.view(1, 1, -1, 1).expand(n, 1, window_size, 1)

    def blur(t):
        t = F.conv2d(F.pad(t, (pad, pad, 0, 0)), kx, groups=n)
        return F.conv2d(F.pad(t, (0, 0, pad, pad)), ky, groups=n)

    stats = blur(torch.cat([x, y, x * x, y * y, x * y], 1))
    mu1, mu2, e11, e22, e12 = stats.split(ch, 1)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = e11 - mu1_sq, e22 - mu2_sq, e12 - mu12
    m = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    if reduction == "none":
        return m[0] if squeeze else m
    if reduction == "batch":
        return m.flatten(1).mean(1)
    return m.mean()


def ssim_reference(img1: torch.Tensor, img2: torch.Tensor, window_size: int = 11, sigma: float = 1.5,
                   c1: float = 0.01**2, c2: float = 0.03**2) -> torch.Tensor:
    """Direct per-window SSIM map (float64 loops over pixels; for tests). Zero padding, same conventions as
    :func:`ssim`. Input `[C, H, W]`, returns the map `[C, H, W]`."""
    x, y = img1.double(), img2.double()
    C, H, W = x.shape
    g1 = gaussian_window(window_size, sigma, torch.float64)
    w = torch.outer(g1, g1)
    p = window_size // 2
    xp, yp = F.pad(x, (p, p, p, p)), F.pad(y, (p, p, p, p))
    out = torch.empty(C, H, W, dtype=torch.float64)
    for i in range(H):
        for j in range(W):
            a = xp[:, i:i + window_size, j:j + window_size]
            b = yp[:, i:i + window_size, j:j + window_size]
            mu_a = (w * a).sum((1, 2))
            mu_b = (w * b).sum((1, 2))
            va = (w * (a - mu_a[:, None, None]).square()).sum((1, 2))
            vb = (w * (b - mu_b[:, None, None]).square()).sum((1, 2))
            cov = (w * (a - mu_a[:, None, None]) * (b - mu_b[:, None, None])).sum((1, 2))
            out[:, i, j] = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (va + vb + c2))
    return out


def gaussian_regularizers(gaussians, scale_weight: float = 1e4, opacity_weight: float = 1e-3) -> dict:
    """TRELLIS Gaussian-decoder regularisers: `scale_weight * mean(prod(scales))` (volume) and
    `opacity_weight * mean((opacity - 1)^2)`. `gaussians` is a `Gaussians` or a list of them (averaged over
    all Gaussians of the list). Returns {"reg_volume", "reg_opacity"} (weighted)."""
    if not isinstance(gaussians, (list, tuple)):
        gaussians = [gaussians]
    scales = torch.cat([g.get_scaling.float() for g in gaussians])
    opac = torch.cat([g.get_opacity.float().reshape(-1) for g in gaussians])
    if scales.numel() == 0:
        z = torch.zeros((), dtype=torch.float32)
        return {"reg_volume": z, "reg_opacity": z}
    return {"reg_volume": scale_weight * scales.prod(-1).mean(),
            "reg_opacity": opacity_weight * (opac - 1.0).square().mean()}


LPIPSHook = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lpips_loss(fn: LPIPSHook | None, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """Optional perceptual term: `fn(pred, target)` on images mapped from [0, 1] to [-1, 1] (the LPIPS
    convention), averaged. Returns None when no hook is configured (the term is then skipped)."""
    if fn is None:
        return None
    v = fn(pred * 2 - 1, target * 2 - 1)
    return v.float().mean()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = float((x.float() - y.float()).square().mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
