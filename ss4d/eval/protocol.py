"""The ss4d evaluation protocol (``shared/spec/evaluation.md``, ``docs/evaluation.md``): ground truth from animated
assets, scoring of any method's renders, and the ``ss4d evaluate`` run that ties it together.

Ground truth (:func:`prepare_ground_truth`), per asset, rendered by Blender in a worker subprocess
(``python -m ss4d.eval.gt --gt-worker JOB``; a Blender crash costs only that asset):

1. the asset's first animation clip (actions sorted by name, as :func:`ss4d.data.blender.list_clips`) or the
   clip named by ``clip`` (exact name or fnmatch pattern); an asset without animation is *not scored*;
2. the clip normalised as in the data toolkit (union of the per-frame bounds over the whole clip, longest side 1,
   centred at the origin, z-up: :func:`ss4d.data.blender.measure_clip`);
3. ``num_frames`` frames uniformly over the clip (:func:`ss4d.data.blender.sample_frames`);
4. one camera per view offset (default 0/90/180/270 deg) at azimuth ``a0 + offset``, elevation 0, radius 2,
   fov 40 deg, looking at the origin (:func:`ss4d.render.camera.orbit_camera`, ``dataset`` convention:
   position ``r (cos az cos el, sin az cos el, sin el)``); ``a0`` (integer degrees) is drawn per asset from the
   asset id and the seed (:func:`input_azimuth`); view 0 is the input video;
5. RGBA PNGs (transparent film; scored white-composited) and the surface voxels (``resolution``-cubed, exact
   triangle/box overlap, :func:`ss4d.data.voxelize.voxelize_mesh`) of every sampled frame's evaluated mesh.

Layout of a report folder (everything cached; a re-run resumes)::

    evaluation.json                 ground-truth settings (a re-run with other settings is refused)
    gt/<asset>/meta.json            clip, sampled frames, normalisation, a0, cameras (read back from Blender)
    gt/<asset>/<view>/<frame>.png   view = v000 (input), v090, v180, v270; frame = 000 ... 031
    gt/<asset>/voxels.npz           f000 ... : int32 [N, 3] surface voxels
    methods/<method>/<asset>/...    a method's renders in the same layout + pose.json, voxels.npz (see baselines)
    report.json, report.md, plots/, sheets/   (see ss4d.eval.report)

Scoring (:func:`score_asset`): per view and frame PSNR / SSIM (white-composited RGB; full image and inside the union
of the prediction's and the truth's masks) and mask IoU (alpha), LPIPS /
CLIP similarity when their weights are given, temporal flicker per view, FVD features per asset, voxel IoU and
Chamfer per frame. Input view (v000) and novel views are reported separately. Anything that cannot be scored (a
missing frame, a render of the wrong size, a view with gaps for flicker / FVD, no geometry) is listed with its
reason; the rest is still scored. Generated methods are also scored at the *fixed yaw* (:mod:`ss4d.eval.baselines`)
and report the yaw error of the pose search (:func:`ss4d.eval.align.yaw_error_deg`).

Splits: assets the model's training record (:mod:`ss4d.eval.splits`) lists as trained or tuned on are marked and kept
out of the headline mean unless ``include_training_assets``.
"""
from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .gt import (
    GT_FORMAT,
    GroundTruth,
    GTRecord,
    GTSettings,
    frame_file,
    gt_cameras,
    input_azimuth,
    load_ground_truth,
    parse_procedural_spec,
    parse_view_name,
    prepare_ground_truth,
    read_rgba,
    render_gt_procedural,
    view_name,
    write_rgba,
)
from .scoring import IMAGE_KEYS, NetworkMetrics, _fvd_summary, load_renders, score_asset

log = logging.getLogger(__name__)

__all__ = [
    "GT_FORMAT",
    "GTSettings",
    "GroundTruth",
    "GTRecord",
    "view_name",
    "frame_file",
    "parse_view_name",
    "input_azimuth",
    "gt_cameras",
    "prepare_ground_truth",
    "parse_procedural_spec",
    "render_gt_procedural",
    "load_ground_truth",
    "read_rgba",
    "write_rgba",
    "load_renders",
    "score_asset",
    "NetworkMetrics",
    "EvalConfig",
    "evaluate",
    "run_method_asset",
    "IMAGE_KEYS",
]


# ================================================================================================================
# the whole run (ground truth: ss4d.eval.gt; scoring: ss4d.eval.scoring)
# ================================================================================================================
@dataclass
class EvalConfig:
    assets: list
    output: str
    gt: GTSettings = field(default_factory=GTSettings)
    model: str | None = None
    name: str = "ss4d"
    baselines: tuple = ()               # "per-frame", "static"
    predictions: list = field(default_factory=list)   # [(name, folder)]
    seed: int = 0
    steps: int | None = None
    cfg: float | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    dinov2_weights: str | None = None
    lpips_weights: str | None = None
    clip_weights: str | None = None
    i3d_weights: str | None = None
    align: dict = field(default_factory=dict)
    sheet_frames: int = 8
    gt_timeout: float | None = None
    in_process: bool = False
    threads: int = 0
    include_training_assets: bool = False
    input_yaw_deg: float | None = None  # input camera's yaw in the model's output frame (None: training record / 0)


def evaluate(cfg: EvalConfig, progress: Callable | None = print) -> dict:
    """Run the protocol: ground truth, each method (model, baselines, external predictions), scores, report.
    Returns the report dict (also written as ``report.json`` / ``report.md`` / plots / sheets)."""
    from . import baselines as BL
    from .report import write_report

    progress = progress or (lambda *a, **k: None)
    if cfg.threads and cfg.threads > 0:
        torch.set_num_threads(int(cfg.threads))
    root = Path(cfg.output)
    methods = BL.build_methods(cfg, root, progress)        # checks the options before any rendering
    record = None
    if cfg.model:
        from ss4d.errors import InputError

        from .splits import load_training_record

        try:
            record = load_training_record(cfg.model)
        except ValueError as e:
            raise InputError(str(e)) from None
        if record is None:
            progress(f"note: {cfg.model} has no training record (training.json): no asset can be marked as trained "
                     "or tuned on")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    records = prepare_ground_truth(cfg.assets, root, cfg.gt, progress=progress, in_process=cfg.in_process,
                                   timeout=cfg.gt_timeout)
    gts = {r.asset_id: load_ground_truth(r, cfg.gt) for r in records if r.ok}
    t_gt = time.perf_counter() - t0
    nets = NetworkMetrics(cfg.lpips_weights, cfg.clip_weights, cfg.i3d_weights, device=cfg.device)
    results: dict = {}
    fvd_feats: dict = {}
    for m in methods:
        results[m.name] = {}
        fvd_feats[m.name] = []
        for aid, gt in gts.items():
            entry, feats = run_method_asset(m, gt, nets, cfg.device, progress)
            results[m.name][aid] = entry
            if feats is not None:
                fvd_feats[m.name].append((aid, feats))
    fvd = {}
    for name, lst in fvd_feats.items():
        fvd[name] = _fvd_summary(lst, nets)
    roles = {r.asset_id: (record.role(r.asset_id) if record else None) for r in records}
    scored_ids = [r.asset_id for r in records if r.ok]
    excluded = {} if cfg.include_training_assets else {a: roles[a] for a in scored_ids if roles[a]}
    report = {
        "format": "ss4d-eval-report-v1",
        "protocol": cfg.gt.key(),
        "seed": cfg.seed,
        "training_record": record.source if record else None,
        "headline": {"assets": [a for a in scored_ids if a not in excluded], "excluded": excluded,
                     "include_training_assets": bool(cfg.include_training_assets),
                     "marked": {a: roles[a] for a in scored_ids if roles[a]}},
        "assets": [{"id": r.asset_id, "path": r.path, "scored": r.ok, "code": r.code, "error": r.error,
                    "role": roles[r.asset_id],
                    "a0_deg": gts[r.asset_id].a0 if r.ok else None,
                    "clip": gts[r.asset_id].meta.get("clip") if r.ok else None,
                    "flags": gts[r.asset_id].meta.get("flags", []) if r.ok else [],
                    "gt_seconds": r.seconds, "gt_cached": r.cached} for r in records],
        "methods": {m.name: m.describe() for m in methods},
        "network_metrics": nets.status(),
        "results": results,
        "fvd": fvd,
        "timing": {"ground_truth_s": t_gt, "total_s": time.perf_counter() - t0},
    }
    write_report(report, root, gts, {m.name: m for m in methods}, sheet_frames=cfg.sheet_frames)
    progress(f"report: {root / 'report.md'}")
    return report


def run_method_asset(m, gt: GroundTruth, nets: NetworkMetrics | None, device="cpu",
                     progress: Callable | None = None) -> tuple[dict, tuple | None]:
    """Produce and score one method on one asset: ``(report entry, FVD features or None)``. The entry holds the
    scores (:func:`score_asset`), the method's info (pose, ``orientation`` with the yaw error) and, when the method
    has fixed-yaw renders, ``fixed_yaw`` (input / novel / all means and mean geometry; no network metrics). A
    failure is recorded in the entry, never raised."""
    progress = progress or (lambda *a, **k: None)
    entry: dict = {"status": "ok"}
    t1 = time.perf_counter()
    try:
        out = m.produce(gt)
    except Exception as e:  # noqa: BLE001 - one asset's failure never stops the run
        log.debug("method %s asset %s failed", m.name, gt.asset_id, exc_info=True)
        entry = {"status": "failed", "code": getattr(e, "code", "failed"),
                 "error": " ".join(f"{type(e).__name__}: {e}".split())}
        progress(f"{m.name} {gt.asset_id}: not scored: {entry['error']}")
        return entry, None
    entry.update(out.info)
    t2 = time.perf_counter()
    try:
        sc = score_asset(gt, out.renders_dir, pred_voxels=out.voxels, voxels_reason=out.voxels_reason, nets=nets,
                         device=device)
        fx = None
        if out.fixed_yaw_dir is not None:
            fx = score_asset(gt, out.fixed_yaw_dir, pred_voxels=out.fixed_yaw_voxels, device=device)
    except Exception as e:  # noqa: BLE001
        log.debug("scoring %s %s failed", m.name, gt.asset_id, exc_info=True)
        entry.update(status="failed", code="score_failed", error=" ".join(f"{type(e).__name__}: {e}".split()),
                     traceback=traceback.format_exc())
        progress(f"{m.name} {gt.asset_id}: scoring failed: {e}")
        return entry, None
    feats = sc.pop("fvd_features")
    entry.update(sc)
    if fx is not None:
        fx.pop("fvd_features", None)
        geo = fx["geometry"]
        entry["fixed_yaw"] = {"input": fx["input"], "novel": fx["novel"], "all": fx["all"],
                              "geometry": {"mean_voxel_iou": geo["mean_voxel_iou"], "mean_chamfer": geo["mean_chamfer"],
                                           "reason": geo["reason"]},
                              "flicker": fx["flicker"], "not_scored": fx["not_scored"]}
    if not sc["complete"]:
        entry["status"] = "partial"
    entry.setdefault("timing", {})["score_s"] = time.perf_counter() - t2
    entry["timing"]["total_s"] = time.perf_counter() - t1
    nv = entry["novel"] or {}
    fy = ((entry.get("fixed_yaw") or {}).get("novel") or {}).get("psnr")
    yaw = (entry.get("orientation") or {}).get("yaw_error_deg")
    progress(f"{m.name} {gt.asset_id}: PSNR in {_fmt(entry['input']['psnr'])} / novel {_fmt(nv.get('psnr'))} "
             f"(masked {_fmt(nv.get('masked_psnr'))}), mask IoU novel {_fmt(nv.get('mask_iou'))}, voxel IoU "
             f"{_fmt(entry['geometry']['mean_voxel_iou'])}, yaw error {_fmt(yaw)}, fixed-yaw PSNR novel {_fmt(fy)}"
             + (f" ({len(sc['not_scored'])} problem(s))" if sc["not_scored"] else ""))
    return entry, feats


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.3f}"
