"""Scoring of one method on one asset against the ground truth: image metrics per view and frame (full and masked),
network metrics from user weights, flicker, FVD features, voxel IoU and Chamfer."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .gt import GroundTruth, _estimated_alpha, _frame_index, parse_view_name, read_rgba, view_name

log = logging.getLogger(__name__)

IMAGE_KEYS = ("psnr", "ssim", "masked_psnr", "masked_ssim", "mask_iou", "lpips", "clip")


# scoring
# ================================================================================================================
class NetworkMetrics:
    """LPIPS (VGG), CLIP similarity (ViT-B/32) and FVD (I3D) from the user's weight files; each reports
    *not computed* (with the reason) when its files are not given or cannot be read."""

    def __init__(self, lpips=None, clip=None, i3d=None, device="cpu"):
        from .clip_vit import CLIPSimilarityMetric
        from .fvd import FVDMetric
        from .lpips import LPIPSMetric

        trunk, heads = _lpips_files(lpips)
        self.lpips = LPIPSMetric(trunk, heads, "vgg", device=device)
        self.clip = CLIPSimilarityMetric(clip, device=device)
        self.fvd = FVDMetric(i3d, device=device)
        if lpips is None:
            self.lpips.reason = "no --lpips-weights given"
        if clip is None:
            self.clip.reason = "no --clip-weights given"
        if i3d is None:
            self.fvd.reason = "no --i3d-weights given"

    def status(self) -> dict:
        return {"lpips": self.lpips.reason if not self.lpips.available else "computed",
                "clip": self.clip.reason if not self.clip.available else "computed",
                "fvd": self.fvd.reason if not self.fvd.available else "computed"}


def _lpips_files(spec) -> tuple[str | None, str | None]:
    """``--lpips-weights``: a folder holding ``vgg16-397923af.pth`` + ``vgg.pth`` (see ``WEIGHT_FILE_NAMES``) or
    ``TRUNK,HEADS``."""
    if spec is None:
        return None, None
    s = str(spec)
    if "," in s:
        a, b = s.split(",", 1)
        return a, b
    if Path(s).is_dir():
        from . import find_weight_files

        found = find_weight_files(s)
        t, h = found["lpips_vgg_trunk"], found["lpips_vgg_lin"]
        return (str(t) if t else str(Path(s) / "vgg16-397923af.pth")), (str(h) if h else str(Path(s) / "vgg.pth"))
    return s, None


@dataclass
class RenderSet:
    """A method's renders of one asset as found on disk."""

    frames: dict                      # view -> {t: Path}
    problems: list                    # [{"view", "frame", "code", "error"}]
    had_alpha: bool = True


def load_renders(folder, gt: GroundTruth) -> RenderSet:
    """Index ``folder/<view>/<frame>.png`` against the ground truth (views by name ``v090`` / ``090`` / ``90``,
    frames by the number in the file name: ``000.png``, ``0.png``, ``f000.png``). Missing views and frames are
    listed as problems; sizes are checked when scoring."""
    folder = Path(folder)
    frames: dict = {v: {} for v in gt.views}
    problems = []
    if not folder.is_dir():
        problems.append({"view": None, "frame": None, "code": "missing",
                         "error": f"no renders for this asset ({folder} does not exist)"})
        return RenderSet(frames, problems)
    by_offset = {}
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        off = parse_view_name(d.name)
        if off is not None and view_name(off) in frames and view_name(off) not in by_offset:
            by_offset[view_name(off)] = d
    for v in gt.views:
        d = by_offset.get(v)
        if d is None:
            problems.append({"view": v, "frame": None, "code": "missing_view", "error": f"no folder for view {v}"})
            continue
        for p in sorted(d.iterdir()):
            if p.suffix.lower() != ".png":
                continue
            t = _frame_index(p.stem)
            if t is not None and t < gt.num_frames and t not in frames[v]:
                frames[v][t] = p
        missing = [t for t in range(gt.num_frames) if t not in frames[v]]
        if missing:
            problems.append({"view": v, "frame": missing, "code": "missing_frames",
                             "error": f"{len(missing)} of {gt.num_frames} frames missing"})
    return RenderSet(frames, problems)


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None
    return float(np.mean(vals))


def score_asset(gt: GroundTruth, renders_dir, *, pred_voxels: list | None = None, voxels_reason: str | None = None,
                nets: NetworkMetrics | None = None, device="cpu") -> dict:
    """Score one method's renders of one asset against the ground truth. Returns a JSON-ready dict::

        {"views": {view: {"psnr": [T] (None where not scored), "ssim", "masked_psnr", "masked_ssim" (inside the
                          union of both alpha masks; None where both are empty), "mask_iou", "lpips", "clip",
                          "flicker": float|None, "scored_frames": int}},
         "input": {metric: mean}, "novel": {...}, "all": {...},
         "flicker": {"input": .., "novel": ..}, "geometry": {"voxel_iou": [T], "chamfer": [T], "mean_*"},
         "not_scored": [problems], "notes": [..], "fvd_features": tensor or None (popped by the caller)}
    """
    from .metrics import composite_white, frame_metrics, temporal_flicker, voxel_chamfer, voxel_iou, voxel_iou_tolerant

    rs = load_renders(renders_dir, gt)
    problems = list(rs.problems)
    notes = []
    T = gt.num_frames
    per_view = {}
    fvd_videos_pred, fvd_videos_gt, fvd_ok = [], [], nets is not None and nets.fvd.available
    alpha_estimated = False
    for v in gt.views:
        g_all = gt.view_rgba(v).float().div(255.0)  # [T,4,H,W]
        H, W = g_all.shape[-2:]
        preds, idx = [], []
        for t in range(T):
            p = rs.frames[v].get(t)
            if p is None:
                continue
            try:
                arr, had_alpha = read_rgba(p)
            except Exception as e:  # noqa: BLE001 - an unreadable file is a problem, not a crash
                problems.append({"view": v, "frame": [t], "code": "unreadable", "error": f"{p.name}: {e}"})
                continue
            if arr.shape[:2] != (H, W):
                problems.append({"view": v, "frame": [t], "code": "resolution",
                                 "error": f"{p.name}: {arr.shape[1]}x{arr.shape[0]} px, ground truth {W}x{H} px"})
                continue
            x = torch.from_numpy(arr).permute(2, 0, 1).float().div(255.0)
            if not had_alpha:
                x[3] = _estimated_alpha(x[:3])
                alpha_estimated = True
            preds.append(x)
            idx.append(t)
        entry = {k: [None] * T for k in IMAGE_KEYS}
        entry["flicker"] = None
        entry["scored_frames"] = len(idx)
        if idx:
            P = torch.stack(preds).to(device)
            G = g_all[idx].to(device)
            fm = frame_metrics(P, G)
            pw, gw = composite_white(P), composite_white(G)
            for k in ("psnr", "ssim", "masked_psnr", "masked_ssim", "mask_iou"):
                for t, val in zip(idx, fm[k].tolist()):
                    entry[k][t] = None if math.isnan(val) else float(val)
            if nets is not None:
                for k, metric in (("lpips", nets.lpips), ("clip", nets.clip)):
                    if metric.available:
                        r = metric(pw, gw)
                        for t, val in zip(idx, r.value.reshape(-1).tolist()):
                            entry[k][t] = float(val)
            if len(idx) == T and T >= 2:
                entry["flicker"] = float(temporal_flicker(pw, gw))
                if fvd_ok:  # I3D features of this view's video (one clip = the asset's views)
                    fvd_videos_pred.append(nets.fvd.features(pw[None]).cpu())
                    fvd_videos_gt.append(nets.fvd.features(gw[None]).cpu())
            elif T >= 2:
                fvd_ok = False
        else:
            fvd_ok = False
        per_view[v] = entry
    if alpha_estimated:
        notes.append("RGB renders without alpha: alpha estimated from non-white pixels for mask IoU")
    inp, novel = gt.views[0], gt.views[1:]

    def agg(views):
        out = {}
        for k in IMAGE_KEYS:
            out[k] = _mean([x for v in views for x in per_view[v][k]])
        out["scored_frames"] = int(sum(per_view[v]["scored_frames"] for v in views))
        return out

    res = {"views": per_view, "input": agg([inp]), "novel": agg(novel) if novel else None,
           "all": agg(gt.views),
           "flicker": {"input": per_view[inp]["flicker"],
                       "novel": _mean([per_view[v]["flicker"] for v in novel]) if novel else None}}
    # geometry
    geo = {"voxel_iou": None, "chamfer": None, "mean_voxel_iou": None, "mean_chamfer": None, "reason": None,
           "tolerant_voxel_iou": None, "mean_tolerant_voxel_iou": None}
    if pred_voxels is not None:
        gtv = gt.voxels()
        if len(pred_voxels) != T:
            geo["reason"] = f"{len(pred_voxels)} predicted voxel frames for {T} ground-truth frames"
        else:
            iou = voxel_iou(pred_voxels, gtv).tolist()
            tiou = voxel_iou_tolerant(pred_voxels, gtv, 1).tolist()
            cd = voxel_chamfer(pred_voxels, gtv, gt.settings.resolution).tolist()
            geo.update(voxel_iou=iou, chamfer=cd, mean_voxel_iou=_mean(iou), mean_chamfer=_mean(cd),
                       tolerant_voxel_iou=tiou, mean_tolerant_voxel_iou=_mean(tiou))
    else:
        geo["reason"] = voxels_reason or "no predicted geometry"
    res["geometry"] = geo
    # FVD features (one clip per asset = its V view videos)
    res["fvd_features"] = None
    if nets is not None and nets.fvd.available:
        if fvd_ok and fvd_videos_pred:
            res["fvd_features"] = (torch.cat(fvd_videos_pred), torch.cat(fvd_videos_gt))
        else:
            notes.append("FVD not computed for this asset: some view lacks frames")
    res["not_scored"] = problems
    res["notes"] = notes
    res["complete"] = not problems
    return res


# ================================================================================================================
def _fvd_summary(lst, nets: NetworkMetrics) -> dict:
    from .fvd import fvd_per_clip, fvd_pooled

    if not nets.fvd.available:
        r = {"computed": False, "reason": f"FVD: {nets.fvd.reason}"}
        return {"per_clip": r, "pooled": r}
    if not lst:
        r = {"computed": False, "reason": "no asset with complete renders"}
        return {"per_clip": r, "pooled": r}
    fp = [f[0] for _, f in lst]
    fg = [f[1] for _, f in lst]
    per = fvd_per_clip(fp, fg)
    return {"per_clip": {"computed": True, "value": {aid: float(v) for (aid, _), v in zip(lst, per)},
                         "mean": float(per.mean())},
            "pooled": {"computed": True, "value": float(fvd_pooled(fp, fg)), "assets": [a for a, _ in lst]}}
