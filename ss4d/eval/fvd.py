"""Fréchet Video Distance (Unterthiner et al. 2018) with the I3D of :mod:`ss4d.eval.i3d`.

``FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``, computed in float64 with
``scipy.linalg.sqrtm``; when the square root is not finite or inaccurate (singular, rank-deficient covariances,
which is the rule with fewer videos than feature dimensions) it is recomputed with ``eps I`` added to both
covariances, and the tiny imaginary part that ``sqrtm`` can return for such matrices is dropped (real part).

Features: the I3D Kinetics-400 logits averaged over time (400-d, as the TF reference and VideoGPT's script), or
``features="pool"`` for the 1024-d average-pooled ``Mixed_5c`` activations. Video preprocessing
(:func:`fvd_preprocess`): RGB frames in ``[0, 1]`` -> shorter side resized to 224 (bilinear, no antialias) and
centre-cropped -> ``2x - 1``. All frames of a video are fed at once (the protocol's 32 frames; I3D accepts any
length). Covariances use the unbiased ``1/(N-1)`` estimator (``np.cov``).

Two aggregations, as ``shared/spec/evaluation.md`` asks:

* **per clip** (:func:`fvd_per_clip`): one FD per asset between that asset's predicted and ground-truth videos, as
  common per-sample evaluation scripts do. *Degenerate*: with one video per side the sample covariance is
  undefined (``N - 1 = 0``; ``np.cov`` returns NaN); we use a zero covariance, so the value is exactly
  ``|f_pred - f_gt|^2``, the squared distance between two I3D feature vectors - a per-pair feature distance, not a
  distance between distributions, and on a different scale from pooled FVD. With a few videos per side (e.g. the
  4 protocol views) the covariances have rank <= N - 1 in 400 dimensions, so the value is dominated by the mean
  term and strongly biased; compare per-clip numbers only with per-clip numbers computed the same way.
* **pooled** (:func:`fvd_pooled`): one FD between all predicted and all ground-truth videos of all assets - the
  distribution-level number; it is still biased for small sets (FVD is usually reported on hundreds of videos).
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .i3d import InceptionI3d, try_load_i3d
from .metrics import MetricResult

__all__ = [
    "feature_statistics",
    "frechet_distance",
    "fvd_from_features",
    "fvd_per_clip",
    "fvd_pooled",
    "fvd_preprocess",
    "i3d_features",
    "FVDMetric",
]


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]``; ``N = 1`` gives a zero
    covariance (see the module docs: the per-clip degenerate case)."""
    f = feats.detach().cpu().double().numpy() if isinstance(feats, torch.Tensor) else np.asarray(feats, np.float64)
    if f.ndim != 2 or f.shape[0] < 1:
        raise ValueError(f"feature_statistics: expected features [N >= 1, D], got shape {f.shape}")
    mu = f.mean(0)
    if f.shape[0] == 1:
        return mu, np.zeros((f.shape[1], f.shape[1]))
    return mu, np.atleast_2d(np.cov(f, rowvar=False))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    from scipy.linalg import sqrtm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = sqrtm(a)
    if isinstance(out, tuple):  # older SciPy with disp=False semantics
        out = out[0]
    return np.asarray(out)


def _sqrt_ok(x: np.ndarray, a: np.ndarray, tol: float) -> bool:
    if not np.isfinite(x).all():
        return False
    na = np.linalg.norm(a)
    return na == 0 or np.linalg.norm(x @ x - a) <= tol * na


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, tol: float = 1e-4) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (float64, see module docs).

    ``eps``: offset added to both covariance diagonals when ``sqrtm(sigma1 sigma2)`` is not finite or its relative
    residual ``|X X - A| / |A|`` exceeds ``tol``. Tiny negative results from round-off are clamped to 0."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"frechet_distance: shape mismatch mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    if not s1.any() or not s2.any():
        tr_covmean = 0.0  # (S1 S2)^(1/2) = 0 when either covariance vanishes
    else:
        a = s1 @ s2
        covmean = _sqrtm(a)
        if not _sqrt_ok(covmean, a, tol):
            off = eps * np.eye(s1.shape[0])
            a = (s1 + off) @ (s2 + off)
            covmean = _sqrtm(a)
            if not np.isfinite(covmean).all():
                raise FloatingPointError("frechet_distance: matrix square root is not finite even with the eps offset")
        if np.iscomplexobj(covmean):
            covmean = covmean.real
        tr_covmean = float(np.trace(covmean))
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def fvd_from_features(pred_feats, gt_feats, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians fitted to feature sets ``[N, D]`` and ``[M, D]``."""
    return frechet_distance(*feature_statistics(pred_feats), *feature_statistics(gt_feats), eps=eps)


def fvd_per_clip(pred_feats: Sequence, gt_feats: Sequence, eps: float = 1e-6) -> np.ndarray:
    """One FD per clip: ``pred_feats[i]`` ``[N_i, D]`` against ``gt_feats[i]`` ``[M_i, D]`` -> ``[K]`` float64.
    With one video per side this is ``|f_pred - f_gt|^2`` (degenerate, see module docs)."""
    if len(pred_feats) != len(gt_feats):
        raise ValueError(f"fvd_per_clip: {len(pred_feats)} predicted clips vs {len(gt_feats)} ground-truth clips")
    return np.array([fvd_from_features(p, g, eps) for p, g in zip(pred_feats, gt_feats)], dtype=np.float64)


def _cat(feats: Sequence) -> np.ndarray:
    return np.concatenate([f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor)
                           else np.asarray(f, np.float64) for f in feats], 0)


def fvd_pooled(pred_feats: Sequence, gt_feats: Sequence, eps: float = 1e-6) -> float:
    """One FD between all clips' predicted videos and all clips' ground-truth videos (features concatenated)."""
    return fvd_from_features(_cat(pred_feats), _cat(gt_feats), eps)


def fvd_preprocess(videos: torch.Tensor, resolution: int = 224) -> torch.Tensor:
    """``[N, T, 3, H, W]`` RGB in ``[0, 1]`` -> I3D input ``[N, 3, T, R, R]`` in ``[-1, 1]`` (shorter side resized
    to ``R`` bilinearly, centre crop)."""
    if videos.dim() != 5 or videos.shape[2] != 3:
        raise ValueError(f"fvd_preprocess: expected videos [N, T, 3, H, W], got {tuple(videos.shape)}")
    N, T, C, H, W = videos.shape
    x = videos.reshape(N * T, C, H, W).float()
    if (H, W) != (resolution, resolution):
        nh, nw = (resolution, int(resolution * W / H)) if H <= W else (int(resolution * H / W), resolution)
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        top, left = (nh - resolution) // 2, (nw - resolution) // 2
        x = x[..., top:top + resolution, left:left + resolution]
    x = x.clamp(0.0, 1.0) * 2.0 - 1.0
    return x.reshape(N, T, C, resolution, resolution).permute(0, 2, 1, 3, 4).contiguous()


@torch.no_grad()
def i3d_features(model: InceptionI3d, videos: torch.Tensor, features: str = "logits", resolution: int = 224,
                 batch_size: int = 4) -> torch.Tensor:
    """I3D features of videos ``[N, T, 3, H, W]`` in ``[0, 1]`` -> ``[N, D]`` float64 on CPU (``D`` = 400 logits or
    1024 pooled)."""
    if features not in ("logits", "pool"):
        raise ValueError(f"i3d_features: features must be 'logits' or 'pool', got {features!r}")
    dev, dt = next(model.parameters()).device, next(model.parameters()).dtype
    out = []
    for i in range(0, videos.shape[0], batch_size):
        x = fvd_preprocess(videos[i:i + batch_size].to(dev), resolution).to(dt)
        y = model(x) if features == "logits" else model.extract_features(x)
        out.append(y.double().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.num_classes if features == "logits" else model.feature_dim)


class FVDMetric:
    """FVD that degrades to *not computed*.

    ``metric(pred_clips, gt_clips)`` takes one ``[N_i, T, 3, H, W]`` tensor of videos (RGB in ``[0, 1]``,
    white-composited) per clip for prediction and ground truth - for the protocol, one clip per asset holding its
    rendered views (``N_i = 4``: the input view and the three novel views; pass one view per clip to reproduce the
    one-video-per-side scripts) - and returns ``{"per_clip": MetricResult([K] array), "per_clip_mean":
    MetricResult(float), "pooled": MetricResult(float)}``; all three are *not computed* without I3D weights."""

    def __init__(self, weights=None, *, features: str = "logits", bn_eps: float = 1e-3, device="cpu",
                 resolution: int = 224, batch_size: int = 4):
        self.model, self.reason = try_load_i3d(weights, bn_eps=bn_eps, device=device)
        self.features_kind = features
        self.resolution = int(resolution)
        self.batch_size = int(batch_size)

    @property
    def available(self) -> bool:
        return self.model is not None

    def features(self, videos: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"FVD not available: {self.reason}")
        return i3d_features(self.model, videos, self.features_kind, self.resolution, self.batch_size)

    def __call__(self, pred_clips: Sequence[torch.Tensor], gt_clips: Sequence[torch.Tensor]) -> dict[str, MetricResult]:
        if self.model is None:
            r = MetricResult.not_computed(f"FVD: {self.reason}")
            return {"per_clip": r, "per_clip_mean": r, "pooled": r}
        if len(pred_clips) != len(gt_clips) or not pred_clips:
            raise ValueError(f"FVD: {len(pred_clips)} predicted clips vs {len(gt_clips)} ground-truth clips")
        fp = [self.features(v) for v in pred_clips]
        fg = [self.features(v) for v in gt_clips]
        per = fvd_per_clip(fp, fg)
        return {"per_clip": MetricResult(per), "per_clip_mean": MetricResult(float(per.mean())),
                "pooled": MetricResult(fvd_pooled(fp, fg))}
