"""Image, geometry and temporal metrics of the ss4d evaluation protocol (``shared/spec/evaluation.md``).

Everything here is deterministic, needs no pretrained weights and works batched on CPU or GPU tensors.

Image metrics (inputs ``[..., C, H, W]`` float in ``[0, 1]``; the result keeps the leading ``...`` dims):

* :func:`composite_white` - RGBA -> RGB over a white background (the protocol scores white-composited RGB).
* :func:`psnr` - ``10 log10(L^2 / MSE)``, MSE over ``C, H, W`` of each image; ``inf`` for identical images.
* :func:`ssim` - Wang et al. 2004 SSIM, 11x11 Gaussian window (sigma 1.5, normalised), ``C1 = (0.01 L)^2``,
  ``C2 = (0.03 L)^2``, population (biased) window statistics, *valid* windows only (no padding, like the
  reference MATLAB ``filter2(..., 'valid')``), mean over channels and window positions.
* :func:`mask_iou` - IoU of alpha masks thresholded at 0.5 (``alpha > t``); two empty masks score 1.
* :func:`masked_psnr` / :func:`masked_ssim` - the same inside a mask (the evaluation uses the union of the
  prediction's and the truth's ``alpha > 0.5``, :func:`union_mask`): on a white background a small object leaves
  most pixels white, so the full-image scores of predicting *nothing* are high; masked scores are not. MSE over the
  masked pixels; SSIM averaged over the windows whose centre pixel is masked. NaN for an empty mask.

Geometry metrics (integer voxel sets ``[N, 3]`` in a ``R^3`` grid, as produced by :mod:`ss4d.data.voxelize`):

* :func:`voxel_iou` - ``|A n B| / |A u B|``; two empty sets score 1. :func:`voxel_iou_tolerant` forgives a
  1-voxel misplacement (precision / recall within a 3^3 dilation).
* :func:`voxel_chamfer` - symmetric Chamfer distance between voxel centres ``(i + 0.5)/R - 0.5`` (normalised
  units, the ground-truth box has side 1)::

      CD(A, B) = mean_{a in A} min_{b in B} |a - b|  +  mean_{b in B} min_{a in A} |a - b|

  (Euclidean distance, *not* squared, sum of the two directed means; ``squared=True`` uses squared distances,
  PyTorch3D-style). Exact: computed with a Euclidean distance transform of the occupancy grid (or a chunked
  brute-force search for very spread-out sets). Two empty sets score 0; exactly one empty set scores ``inf``
  (a method that produced nothing is penalised, not skipped).

  Both accept a single ``[N, 3]`` tensor (-> 0-d tensor) or a sequence of per-frame tensors (-> ``[T]``).

Temporal metric:

* :func:`temporal_change` - mean ``|x_t - x_{t-1}|`` over the ``T - 1`` consecutive pairs and all of
  ``C, H, W``, for frames ``[..., T, C, H, W]``.
* :func:`temporal_flicker` - ``temporal_change(pred) - temporal_change(gt)`` per sequence (per view):
  0 = as smooth as the truth, positive = flicker, negative = smoother than the truth (e.g. frozen).

Network metrics (LPIPS, CLIP similarity, FVD) live in :mod:`ss4d.eval.lpips`, :mod:`ss4d.eval.clip_vit` and
:mod:`ss4d.eval.fvd`; without the user's weight files they report *not computed* (``None`` + a reason), see
:class:`MetricResult`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MetricResult",
    "composite_white",
    "psnr",
    "ssim",
    "masked_psnr",
    "masked_ssim",
    "union_mask",
    "gaussian_window_1d",
    "mask_iou",
    "voxel_iou",
    "voxel_iou_tolerant",
    "voxel_chamfer",
    "temporal_change",
    "temporal_flicker",
    "frame_metrics",
    "read_weight_file",
]


# ----------------------------------------------------------------------------------------------------------------------
# "not computed" results
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricResult:
    """Outcome of a metric that may be unavailable: ``value`` (a number or tensor) or ``None`` with a ``reason``.

    ``str(result)`` gives ``"0.1234"`` or ``"not computed (<reason>)"``; :meth:`as_dict` is JSON friendly. A
    metric that could not be computed never reports a number."""

    value: object | None
    reason: str | None = None

    @property
    def computed(self) -> bool:
        return self.value is not None

    @classmethod
    def not_computed(cls, reason: str) -> MetricResult:
        return cls(None, reason)

    def as_dict(self) -> dict:
        v = self.value
        if isinstance(v, torch.Tensor):
            v = v.item() if v.numel() == 1 else v.tolist()
        elif isinstance(v, np.ndarray):
            v = v.item() if v.size == 1 else v.tolist()
        return {"computed": self.computed, "value": v, "reason": self.reason}

    def __iter__(self):  # ``value, reason = result``
        return iter((self.value, self.reason))

    def __str__(self) -> str:
        if self.value is None:
            return f"not computed ({self.reason})"
        v = self.value
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        return f"{v:.4f}" if isinstance(v, float) else str(v)


def read_weight_file(path: str | os.PathLike, what: str, *, allow_torchscript: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict (float tensors on CPU) from ``.pth``/``.pt``/``.bin`` (``torch.load(weights_only=True)``) or
    ``.safetensors``. A ``{"state_dict"|"model"|"module": {...}}`` wrapper is unwrapped.

    TorchScript archives (e.g. OpenAI's CLIP ``ViT-B-32.pt``) can hold code, so they are only opened with
    ``torch.jit.load`` when ``allow_torchscript=True``. Raises ``FileNotFoundError`` / ``RuntimeError`` naming the
    file and what it was meant to be."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file not found: {path}")
    # torch.load(weights_only=True) itself hands TorchScript archives to torch.jit.load, so detect them first
    if not path.endswith(".safetensors") and _is_torchscript(path):
        if not allow_torchscript:
            raise RuntimeError(
                f"{what}: {path} is a TorchScript archive, which may run code when loaded; convert it once to a "
                "plain state dict (see the module docs) or pass allow_torchscript=True if you trust the file"
            )
        try:
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise RuntimeError(f"{what}: cannot read TorchScript archive {path}: {e}") from e
    else:
        try:
            if path.endswith(".safetensors"):
                from safetensors.torch import load_file

                obj = load_file(path, device="cpu")
            else:
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise RuntimeError(f"{what}: cannot read {path} (corrupt, truncated or not a state dict): {e}") from e
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "module"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"{what}: {path} does not contain a state dict of tensors (got {type(obj).__name__})")
    return {str(k): v for k, v in obj.items()}


def _is_torchscript(path: str) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:  # the test torch.load uses: a "constants.pkl" record
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


# ----------------------------------------------------------------------------------------------------------------------
# image metrics
# ----------------------------------------------------------------------------------------------------------------------
def composite_white(rgba: torch.Tensor, premultiplied: bool = False) -> torch.Tensor:
    """``[..., 4, H, W]`` RGBA in ``[0, 1]`` -> ``[..., 3, H, W]`` over white: ``rgb a + (1 - a)`` for straight alpha
    (PNG), ``rgb + (1 - a)`` for premultiplied colour (a rasterizer's accumulated colour). 3-channel input is
    returned unchanged."""
    if rgba.shape[-3] == 3:
        return rgba
    if rgba.shape[-3] != 4:
        raise ValueError(f"composite_white: expected 3 or 4 channels in dim -3, got shape {tuple(rgba.shape)}")
    rgb, a = rgba[..., :3, :, :], rgba[..., 3:4, :, :]
    return (rgb if premultiplied else rgb * a) + (1.0 - a)


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, name: str, min_dims: int = 3) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{name}: shape mismatch {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.dim() < min_dims:
        raise ValueError(f"{name}: expected [..., C, H, W], got shape {tuple(pred.shape)}")


def psnr(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image ``[..., C, H, W]`` -> ``[...]`` (float64): ``10 log10(L^2 / mean((pred - gt)^2))``.
    Identical images give ``inf``."""
    _check_pair(pred, gt, "psnr")
    mse = (pred.double() - gt.double()).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)


def gaussian_window_1d(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian ``exp(-(i - c)^2 / 2 sigma^2)``, ``i = 0..size-1``, ``c = (size - 1)/2``; the 2-D SSIM
    window is its outer product (sums to 1)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``[B, 1, H, W]`` with the 1-D kernel ``g`` along H and W."""
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1))
    return F.conv2d(x, g.view(1, 1, 1, k))


def ssim(
    pred: torch.Tensor,
    gt: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk: int = 4,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Mean SSIM of each image ``[..., C, H, W]`` -> ``[...]`` (see module docs). ``H, W >= window_size``.

    Per channel and window: ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with Gaussian-weighted means, variances and covariance (weights summing to 1, no Bessel correction).
    Computed in ``dtype`` (float64 by default: ``E[x^2] - E[x]^2`` cancels badly in float32 on flat white
    background, where it matters against ``C2 = 9e-4``), ``chunk`` images at a time to bound memory (about
    ``chunk * C * 40 * H * W`` bytes). ``dtype=torch.float32`` roughly halves the time (differences ~1e-8 on natural
    images); a 512^2 RGB image costs about 0.3-1 s on one CPU core in float64, so prefer a GPU for whole assets."""
    return _ssim(pred, gt, None, data_range, window_size, sigma, k1, k2, chunk, dtype)[0]


def masked_ssim(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0,
                window_size: int = 11, sigma: float = 1.5, chunk: int = 4) -> torch.Tensor:
    """SSIM of each image ``[..., C, H, W]`` averaged over the windows whose centre pixel lies in ``mask``
    (``[..., H, W]`` bool) -> ``[...]``; NaN where no window centre is in the mask. Same windows as :func:`ssim`."""
    return _ssim(pred, gt, mask, data_range, window_size, sigma, 0.01, 0.03, chunk, torch.float64)[1]


def _ssim(pred, gt, mask, data_range=1.0, window_size=11, sigma=1.5, k1=0.01, k2=0.03, chunk=4,
          dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(mean SSIM, masked mean SSIM or None)`` from one pass over the SSIM maps (see :func:`ssim`)."""
    _check_pair(pred, gt, "ssim")
    H, W = pred.shape[-2:]
    if H < window_size or W < window_size:
        raise ValueError(f"ssim: images of {H}x{W} are smaller than the {window_size}x{window_size} window")
    lead = pred.shape[:-3]
    C = pred.shape[-3]
    x_all = pred.reshape(-1, C, H, W)
    y_all = gt.reshape(-1, C, H, W)
    m_all = None
    if mask is not None:
        if tuple(mask.shape) != tuple(pred.shape[:-3]) + (H, W):
            raise ValueError(f"masked ssim: mask shape {tuple(mask.shape)} does not match images {tuple(pred.shape)}")
        c = (window_size - 1) // 2    # window centres of the valid positions
        m_all = mask.reshape(-1, H, W)[:, c:H - window_size + 1 + c, c:W - window_size + 1 + c].to(dtype)
    g = gaussian_window_1d(window_size, sigma, dtype).to(pred.device)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    out, out_m = [], []
    for s in range(0, x_all.shape[0], max(1, int(chunk))):
        x = x_all[s:s + chunk].to(dtype).reshape(-1, 1, H, W)
        y = y_all[s:s + chunk].to(dtype).reshape(-1, 1, H, W)
        stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], 0), g)
        mx, my, xx, yy, xy = stats.chunk(5, 0)
        vx = xx - mx * mx
        vy = yy - my * my
        cxy = xy - mx * my
        num = (2 * mx * my + c1) * (2 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        smap = (num / den).reshape(-1, C, *num.shape[-2:])
        out.append(smap.mean(dim=(-3, -2, -1)))
        if m_all is not None:
            m = m_all[s:s + chunk].to(smap.device)
            cnt = m.sum(dim=(-2, -1))
            tot = (smap.mean(dim=-3) * m).sum(dim=(-2, -1))
            out_m.append(torch.where(cnt > 0, tot / cnt.clamp_min(1), torch.full_like(tot, math.nan)))
    if not out:
        z = torch.zeros(lead, dtype=dtype, device=pred.device)
        return z, (None if mask is None else z.clone())
    return torch.cat(out).reshape(lead), (torch.cat(out_m).reshape(lead) if m_all is not None else None)


def masked_psnr(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image ``[..., C, H, W]`` over the pixels of ``mask`` (``[..., H, W]`` bool) only:
    ``10 log10(L^2 / MSE)`` with the MSE over ``C`` and the masked pixels -> ``[...]`` (float64); NaN where the
    mask is empty, ``inf`` where the masked pixels agree exactly."""
    _check_pair(pred, gt, "masked_psnr")
    if tuple(mask.shape) != tuple(pred.shape[:-3]) + tuple(pred.shape[-2:]):
        raise ValueError(f"masked_psnr: mask shape {tuple(mask.shape)} does not match images {tuple(pred.shape)}")
    m = mask.to(torch.float64)
    se = (pred.double() - gt.double()).square().sum(dim=-3)
    cnt = m.sum(dim=(-2, -1)) * pred.shape[-3]
    mse = (se * m).sum(dim=(-2, -1)) / cnt.clamp_min(1)
    val = 10.0 * torch.log10(float(data_range) ** 2 / mse)
    return torch.where(cnt > 0, val, torch.full_like(val, math.nan))


def union_mask(pred_alpha: torch.Tensor, gt_alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Pixels where the prediction or the truth shows the object (``alpha > threshold``), ``[..., H, W]`` bool: the
    region of the masked metrics (a white background no longer counts as agreement)."""
    return (pred_alpha > threshold) | (gt_alpha > threshold)


def mask_iou(pred_alpha: torch.Tensor, gt_alpha: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU of the binary masks ``alpha > threshold`` for alpha ``[..., H, W]`` -> ``[...]`` (float64). A pair of
    empty masks scores 1 (both agree that nothing is there). Pass alpha without a channel dim
    (``rgba[..., 3, :, :]``)."""
    if pred_alpha.shape != gt_alpha.shape:
        raise ValueError(f"mask_iou: shape mismatch {tuple(pred_alpha.shape)} vs {tuple(gt_alpha.shape)}")
    if pred_alpha.dim() < 2:
        raise ValueError(f"mask_iou: expected [..., H, W], got shape {tuple(pred_alpha.shape)}")
    a = pred_alpha > threshold
    b = gt_alpha > threshold
    inter = (a & b).sum(dim=(-2, -1)).double()
    union = (a | b).sum(dim=(-2, -1)).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def frame_metrics(pred_rgba: torch.Tensor, gt_rgba: torch.Tensor,
                  premultiplied: bool = False) -> dict[str, torch.Tensor]:
    """PSNR, SSIM (white-composited RGB), their masked variants inside the union of both alpha masks
    (``masked_psnr``, ``masked_ssim``; NaN where both masks are empty) and mask IoU of RGBA frames
    ``[..., 4, H, W]``; each ``[...]``."""
    _check_pair(pred_rgba, gt_rgba, "frame_metrics")
    if pred_rgba.shape[-3] != 4:
        raise ValueError(f"frame_metrics: expected RGBA [..., 4, H, W], got {tuple(pred_rgba.shape)}")
    p = composite_white(pred_rgba, premultiplied)
    g = composite_white(gt_rgba, premultiplied)
    union = union_mask(pred_rgba[..., 3, :, :], gt_rgba[..., 3, :, :])
    full_ssim, m_ssim = _ssim(p, g, union)
    return {
        "psnr": psnr(p, g),
        "ssim": full_ssim,
        "masked_psnr": masked_psnr(p, g, union),
        "masked_ssim": m_ssim,
        "mask_iou": mask_iou(pred_rgba[..., 3, :, :], gt_rgba[..., 3, :, :]),
    }


# ----------------------------------------------------------------------------------------------------------------------
# voxel metrics
# ----------------------------------------------------------------------------------------------------------------------
def _as_coords(c, name: str) -> torch.Tensor:
    c = torch.as_tensor(c)
    if c.numel() == 0:
        return torch.zeros(0, 3, dtype=torch.long)
    if c.dim() != 2 or c.shape[1] != 3:
        raise ValueError(f"{name}: expected integer voxel coordinates [N, 3], got shape {tuple(c.shape)}")
    if c.is_floating_point():
        if not torch.equal(c, c.round()):
            raise ValueError(f"{name}: voxel coordinates must be integers")
    return torch.unique(c.long().cpu(), dim=0)


def _per_frame(fn, pred, gt, name: str, **kw) -> torch.Tensor:
    if isinstance(pred, torch.Tensor) or isinstance(gt, torch.Tensor) or isinstance(pred, np.ndarray):
        return torch.tensor(fn(_as_coords(pred, name), _as_coords(gt, name), **kw), dtype=torch.float64)
    pred, gt = list(pred), list(gt)
    if len(pred) != len(gt):
        raise ValueError(f"{name}: {len(pred)} predicted frames vs {len(gt)} ground-truth frames")
    return torch.tensor([fn(_as_coords(p, name), _as_coords(g, name), **kw) for p, g in zip(pred, gt)],
                        dtype=torch.float64)


def _keys(c: torch.Tensor, lo: torch.Tensor, ext: torch.Tensor) -> torch.Tensor:
    c = c - lo
    return (c[:, 0] * ext[1] + c[:, 1]) * ext[2] + c[:, 2]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape[0] == 0 and b.shape[0] == 0:
        return 1.0
    if a.shape[0] == 0 or b.shape[0] == 0:
        return 0.0
    both = torch.cat([a, b])
    lo = both.min(0).values
    ext = both.max(0).values - lo + 1
    ka, kb = _keys(a, lo, ext), _keys(b, lo, ext)
    inter = int(torch.isin(ka, kb).sum())
    return inter / (a.shape[0] + b.shape[0] - inter)


def voxel_iou(pred, gt) -> torch.Tensor:
    """Voxel IoU of integer sets: ``[N, 3]`` tensors -> 0-d tensor, or per-frame sequences -> ``[T]`` (float64).
    Duplicates are ignored; two empty sets score 1, one empty set 0."""
    return _per_frame(_iou, pred, gt, "voxel_iou")


def _tolerant_iou(a: torch.Tensor, b: torch.Tensor, tol: int) -> float:
    if a.shape[0] == 0 and b.shape[0] == 0:
        return 1.0
    if a.shape[0] == 0 or b.shape[0] == 0:
        return 0.0
    both = torch.cat([a, b])
    lo = both.min(0).values - tol
    ext = both.max(0).values - lo + 1 + tol
    r = torch.arange(-tol, tol + 1)
    offs = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)

    def near(src, dst):  # how many src voxels lie within `tol` (Chebyshev) of a dst voxel
        grown = _keys((dst[:, None, :] + offs[None]).reshape(-1, 3), lo, ext)
        return int(torch.isin(_keys(src, lo, ext), grown).sum())

    precision, recall = near(a, b) / a.shape[0], near(b, a) / b.shape[0]
    if precision == 0 or recall == 0:
        return 0.0
    return precision * recall / (precision + recall - precision * recall)


def voxel_iou_tolerant(pred, gt, tol: int = 1) -> torch.Tensor:
    """Voxel IoU that forgives ``tol`` voxels of misplacement: with precision = share of predicted voxels within
    ``tol`` (Chebyshev, a (2 tol + 1)^3 dilation) of the truth and recall = the same the other way,
    ``P R / (P + R - P R)``, which is exactly :func:`voxel_iou` for ``tol = 0``. Per frame like :func:`voxel_iou`."""
    if int(tol) < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    return _per_frame(_tolerant_iou, pred, gt, "voxel_iou_tolerant", tol=int(tol))


_EDT_MAX_CELLS = 1 << 24


def _directed_min_dist(src: torch.Tensor, dst: torch.Tensor, lo: torch.Tensor, ext: torch.Tensor) -> torch.Tensor:
    """For each voxel of ``src``, the Euclidean distance (voxel units) to the nearest voxel of ``dst``."""
    if int(ext.prod()) <= _EDT_MAX_CELLS:
        from scipy.ndimage import distance_transform_edt

        free = np.ones(tuple(int(e) for e in ext), dtype=bool)
        d = (dst - lo).numpy()
        free[d[:, 0], d[:, 1], d[:, 2]] = False
        dist = distance_transform_edt(free)  # exact Euclidean distance to the nearest dst voxel
        s = (src - lo).numpy()
        return torch.from_numpy(dist[s[:, 0], s[:, 1], s[:, 2]].astype(np.float64))
    out = []
    dstf = dst.double()
    for i in range(0, src.shape[0], 4096):  # brute force for very spread-out sets
        out.append(torch.cdist(src[i:i + 4096].double(), dstf).min(1).values)
    return torch.cat(out)


def _chamfer(a: torch.Tensor, b: torch.Tensor, resolution: int, squared: bool) -> float:
    if a.shape[0] == 0 and b.shape[0] == 0:
        return 0.0
    if a.shape[0] == 0 or b.shape[0] == 0:
        return math.inf
    both = torch.cat([a, b])
    lo = both.min(0).values
    ext = both.max(0).values - lo + 1
    dab = _directed_min_dist(a, b, lo, ext) / resolution
    dba = _directed_min_dist(b, a, lo, ext) / resolution
    if squared:
        dab, dba = dab.square(), dba.square()
    return float(dab.mean() + dba.mean())


def voxel_chamfer(pred, gt, resolution: int, squared: bool = False) -> torch.Tensor:
    """Symmetric Chamfer distance (module docs) between integer voxel sets of an ``R^3`` grid, in normalised units
    (voxel centres ``(i + 0.5)/R - 0.5``; the offset cancels). ``[N, 3]`` -> 0-d tensor, per-frame sequences ->
    ``[T]`` (float64). Coordinates may lie outside ``[0, R)`` (e.g. a misaligned prediction)."""
    R = int(resolution)
    if R <= 0:
        raise ValueError(f"voxel_chamfer: resolution must be positive, got {resolution}")
    return _per_frame(_chamfer, pred, gt, "voxel_chamfer", resolution=R, squared=bool(squared))


# ----------------------------------------------------------------------------------------------------------------------
# temporal flicker
# ----------------------------------------------------------------------------------------------------------------------
def temporal_change(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute frame-to-frame change of ``[..., T, C, H, W]`` -> ``[...]`` (float64):
    ``mean_{t=1..T-1} mean_{c,h,w} |x_t - x_{t-1}|``. Needs ``T >= 2``."""
    if frames.dim() < 4:
        raise ValueError(f"temporal_change: expected [..., T, C, H, W], got shape {tuple(frames.shape)}")
    if frames.shape[-4] < 2:
        raise ValueError("temporal_change: needs at least 2 frames")
    f = frames.double()
    return (f[..., 1:, :, :, :] - f[..., :-1, :, :, :]).abs().mean(dim=(-4, -3, -2, -1))


def temporal_flicker(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``temporal_change(pred) - temporal_change(gt)`` per sequence, ``[..., T, C, H, W]`` -> ``[...]`` (e.g.
    ``[V, T, 3, H, W]`` -> one value per view). Score white-composited RGB for the protocol. The two may differ in
    ``C, H, W`` (each sequence's change is a mean) but not in ``[..., T]``."""
    if pred.dim() < 4 or pred.shape[:-3] != gt.shape[:-3]:
        raise ValueError(f"temporal_flicker: leading [..., T] dims differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")
    return temporal_change(pred) - temporal_change(gt)
