"""Methods scored by ``ss4d evaluate``: the model, its baselines, and any external method's renders.

* ``model`` (``--model DIR``, named by ``--name``, default ``ss4d``): :class:`VideoTo4DPipeline` on the input
  video's RGBA frames with ``--seed`` / ``--steps`` / ``--cfg``.
* ``empty`` (in every report): no Gaussians at all - every render is the background alone. On a white background
  its full-image PSNR is the floor a method must clear (a small object leaves most pixels white).
* ``per-frame``: SS4D without its temporal modules - the same weights with temporal reasoning disabled
  (:func:`disable_temporal`) *and* every non-SS4D addition of :data:`ADDITIONS` switched off (fresh starting noise
  per frame, no colour transfer): every frame is generated without information from the other frames - up to the
  latent flow's frame pairing (below).
* ``static``: the model's first-frame result held for all frames (the model's cached output is reused).
* ``latent-noise``: the full model with the latent flow's output replaced by its starting noise (0 latent-flow
  steps, everything else unchanged): what the spacetime latents contribute.
* ablations ``no-<addition>`` (``--baselines ablations`` or by name): the full model with one non-SS4D addition of
  :data:`ADDITIONS` switched off; an addition the model does not use is not run (noted in the report).
* ``--predictions DIR``: renders of any method laid out as ``DIR/<asset>/<view>/<frame>.png`` (RGBA, or RGB on
  white: alpha is then estimated from non-white pixels), at the protocol's cameras; optional
  ``DIR/<asset>/voxels.npz`` (``f000`` ... : int ``[N, 3]`` voxels of the ground-truth grid) for geometry metrics.

Generated methods are aligned (:mod:`ss4d.eval.align`) and rendered with the Gaussian rasterizer at the found pose
(+ the protocol's azimuth offsets), into ``<report>/methods/<name>/<asset>/`` in the same layout as the
predictions (so such a folder can itself be passed as ``--predictions`` later), with ``pose.json``,
``fixed_yaw/<view>/<frame>.png`` (the same Gaussians rendered with the azimuth pinned to the input camera's yaw in
the model's output frame, elevation and distance searched: the *fixed-yaw* scores),
``voxels.npz`` (the transformed Gaussian centres voxelized in the ground-truth grid) and ``gaussians.safetensors``
(the raw output, reused by a re-run and by the static baseline). ``status.json`` records the settings; a re-run
with the same settings reuses everything.

:func:`disable_temporal` (per-frame baseline), on a deep copy of the pipeline:

1. sparse-structure flow: every block's self-attention ``attn_mode="windowed"``, ``window_size=1`` (no shift):
   attention within one frame (temporal RoPE still applied, so a frame's tokens are treated exactly as before);
2. latent flow: the temporal ResBlocks (``input_blocks_t`` / ``out_blocks_t``) are skipped - the block's output is
   its residual path (identity, or its own 1x1 skip projection where the channel count changes) on the same
   temporally down/up-sampled voxels, so the token layout is unchanged; the transformer's self-attention is limited
   to one (temporally compressed) frame;
3. Gaussian decoder: the cross-frame swin windows are 1 frame wide (same spatial windows and shifts).

Limit: the latent flow's 2x temporal compression (frames 2k and 2k+1 merged by averaging, then copied back) is an
architectural part of the token layout and stays; so do the paired conditioning of the compressed frames and the
pair-averaged timestep embedding. Frames of different pairs never exchange information; the two frames of a pair
still share the compressed tokens of the latent flow.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ss4d.export.container import load_4d, save_4d
from ss4d.nn.attention import MultiHeadAttention
from ss4d.sparse import attention as sattn

from .align import AlignSettings, Pose, align_to_input, pose_camera, prediction_to_gt, prediction_voxels, yaw_error_deg

__all__ = [
    "MethodError",
    "MethodOutput",
    "Addition",
    "ADDITIONS",
    "ABLATION_NAMES",
    "switch_off",
    "disable_temporal",
    "render_views",
    "GeneratedMethod",
    "EmptyMethod",
    "PredictionsMethod",
    "build_methods",
]


class MethodError(Exception):
    """A method cannot produce an asset (``code`` is short and machine-readable)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class MethodOutput:
    """Where a method's renders of one asset are, its voxels, and (generated methods) the fixed-yaw renders."""

    def __init__(self, renders_dir, voxels=None, voxels_reason=None, info=None, fixed_yaw_dir=None,
                 fixed_yaw_voxels=None):
        self.renders_dir = Path(renders_dir)
        self.voxels = voxels
        self.voxels_reason = voxels_reason
        self.info = info or {}
        self.fixed_yaw_dir = Path(fixed_yaw_dir) if fixed_yaw_dir is not None else None
        self.fixed_yaw_voxels = fixed_yaw_voxels


# ================================================================================================================
# non-SS4D additions of the pipeline, switched off one at a time by the ablations (and all at once by per-frame)
# ================================================================================================================
@dataclass(frozen=True)
class Addition:
    """An ss4d addition that SS4D does not have: ``is_on(pipe)``; ``switch_off(pipe_copy, call_kwargs)``."""

    name: str
    what: str
    is_on: Callable
    switch_off: Callable


def _has_post_step(pipe, name: str) -> bool:
    return any(st["name"] == name for st in getattr(pipe, "post_steps", []))


def _drop_post_step(pipe, name: str) -> None:
    pipe.post_steps = [st for st in pipe.post_steps if st["name"] != name]


# one line per addition (row ``no-<name>``); a new option of the pipeline gets its own line here
ADDITIONS = (
    Addition("shared-noise", "one starting noise shared by all frames (SS4D: fresh noise per frame)",
             lambda p: getattr(p, "temporal_noise", "independent") == "shared",
             lambda p, kw: setattr(p, "temporal_noise", "independent")),
    Addition("color-transfer", "colours taken from the input video (SS4D: the decoder's own colours)",
             lambda p: float(getattr(p, "color_from_input", 0.0) or 0.0) > 0.0,
             lambda p, kw: kw.__setitem__("color_from_input", 0.0)),
    Addition("silhouette-guidance", "structure guided / carved / filled by the input masks (SS4D: none)",
             lambda p: bool(getattr(getattr(p, "silhouette", None), "enabled", False)),
             lambda p, kw: setattr(p, "silhouette", replace(p.silhouette, strength=0.0, carve=False, fill=False))),
    Addition("silhouette-fit", "Gaussians fitted to the input masks in the input view (SS4D: none)",
             lambda p: _has_post_step(p, "silhouette_fit"), lambda p, kw: _drop_post_step(p, "silhouette_fit")),
    Addition("centering", "object moved onto the input camera's axis (SS4D: left where the model puts it)",
             lambda p: _has_post_step(p, "center_on_input"), lambda p, kw: _drop_post_step(p, "center_on_input")),
)
ABLATION_NAMES = tuple(f"no-{a.name}" for a in ADDITIONS)


def switch_off(pipeline, names) -> tuple:
    """``(pipeline copy, extra call kwargs)`` with the :data:`ADDITIONS` named in ``names`` switched off (the
    original pipeline is untouched; the weights are shared)."""
    p = copy.copy(pipeline)
    kw: dict = {}
    for a in ADDITIONS:
        if a.name in names:
            a.switch_off(p, kw)
    return p, kw


# ================================================================================================================
# per-frame baseline: temporal reasoning disabled
# ================================================================================================================
class _TemporalSkip(torch.nn.Module):
    """A skipped temporal ResBlock: same temporal down/up-sampling, output = residual path only."""

    def __init__(self, block):
        super().__init__()
        self.block = block
        self.downsample, self.upsample = block.downsample, block.upsample

    def forward(self, x, emb, num_frames=None):
        x, _ = self.block._updown(x, num_frames)
        return x.replace(self.block.skip_connection(x.feats))


class _PerFrameAttention(MultiHeadAttention):
    """A sparse ``temporal`` self-attention limited to one frame (batch entry): swin windows get the per-frame key
    (same spatial windows and shift), full attention runs per entry. Temporal RoPE is still applied (with a QK
    RMS-norm after it, dropping it would change the scores)."""

    def _forward_sparse(self, x, context, num_frames):
        if self.type != "temporal":
            return super()._forward_sparse(x, context, num_frames)
        n = x.feats.shape[0]
        h, d = self.num_heads, self.head_dim
        q, k, v = self.to_qkv(x.feats).view(n, 3, h, d).unbind(1)
        t = num_frames or 1
        if self.use_rope_t:
            q, k = self._rope(q, k, x.batch_index % t, (n,))
        q, k = self._norm_qk(q, k)
        if self.attn_mode == "swin":
            out = sattn.windowed_attention(q, k, v, sattn.spatial_window_keys(x, self.window_size, self.shift_window))
        else:
            out = sattn.varlen_attention(q, k, v, x.batch_counts)
        return self.to_out(out.reshape(n, -1))


def _per_frame_attention(attn) -> None:
    if attn.type == "temporal" and type(attn) is MultiHeadAttention:
        attn.__class__ = _PerFrameAttention


def disable_temporal(pipeline):
    """A copy of ``pipeline`` (a :class:`~ss4d.pipeline.video_to_4d.VideoTo4DPipeline`) with temporal reasoning
    disabled (module docs); the original is untouched. Raises ``ValueError`` for a latent flow with 4D io
    convolutions (``conv_type="4D"``), whose spatial and temporal kernels cannot be separated."""
    p = copy.copy(pipeline)
    p.models = {k: copy.deepcopy(m) for k, m in pipeline.models.items()}
    ss = p.models["sparse_structure_flow_model"]
    for blk in ss.blocks:
        a = blk.self_attn
        if a.type == "temporal":
            a.attn_mode = "windowed"
            a.window_size = 1
            a.shift_window = 0
    slat = p.models["slat_flow_model"]
    if getattr(slat, "conv_type", "3D") == "4D":
        raise ValueError("disable_temporal: a latent flow with 4D io convolutions (conv_type='4D') is not supported")
    for name in ("input_blocks_t", "out_blocks_t"):
        blocks = getattr(slat, name, None)
        if blocks is not None:
            for i in range(len(blocks)):
                if not isinstance(blocks[i], _TemporalSkip):
                    blocks[i] = _TemporalSkip(blocks[i])
    for blk in slat.blocks:
        _per_frame_attention(blk.self_attn)
    dec = p.models["slat_decoder_gs"]
    for blk in dec.blocks:
        _per_frame_attention(blk.attn)
    return p


# ================================================================================================================
# Gaussians on disk
# ================================================================================================================


def render_views(gaussians, pose: Pose, gt_settings, folder, device="cpu") -> None:
    """Rasterize every frame at every protocol view (``pose`` + the view offsets) into ``folder/<view>/<t>.png``
    as straight-alpha RGBA."""
    from ss4d.render.rasterizer import rasterize

    from .gt import frame_file, view_name, write_rgba

    folder = Path(folder)
    for off in gt_settings.view_offsets:
        cam = pose_camera(pose, gt_settings.fov_deg, gt_settings.size, off)
        d = folder / view_name(off)
        d.mkdir(parents=True, exist_ok=True)
        for t, g in enumerate(gaussians):
            with torch.no_grad():
                out = rasterize(g.to(device=device), cam.to(device=device), bg=(0.0, 0.0, 0.0))
            a = out["alpha"].float().cpu().clamp(0, 1)
            c = out["color"].float().cpu().clamp(min=0)
            straight = torch.where(a > 0, c / a.clamp_min(1e-8), torch.zeros_like(c)).clamp(0, 1)
            rgba = torch.cat([straight, a], 0)
            arr = (rgba * 255.0 + 0.5).floor().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            write_rgba(d / frame_file(t), arr)


def _save_voxels(path, voxels) -> None:
    np.savez_compressed(path, **{f"f{t:03d}": v.numpy().astype(np.int32) for t, v in enumerate(voxels)})


def _load_voxels(path, num_frames: int) -> list | None:
    with np.load(path) as z:
        out = []
        for t in range(num_frames):
            key = next((k for k in (f"f{t:03d}", f"{t:03d}", str(t)) if k in z.files), None)
            if key is None:
                return None
            out.append(torch.from_numpy(np.asarray(z[key]).astype(np.int64).reshape(-1, 3)))
        return out


def model_fingerprint(folder) -> str:
    """A hash of a model folder's files (pipeline.json, configs, weights): cached generations of a model are reused
    only while none of its files changed (a new pipeline.json setting or new weights regenerate)."""
    from ss4d.io_utils import sha256_file

    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    return _hash({str(p.relative_to(root) if root.is_dir() else p.name): sha256_file(p) for p in files})


def _hash(d: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ================================================================================================================
# methods
# ================================================================================================================
class GeneratedMethod:
    """A method whose output is Gaussians per frame (model, per-frame, static): aligned, rendered, voxelized."""

    FIXED_YAW = "fixed_yaw"    # sub-folder of the fixed-yaw renders

    def __init__(self, name: str, kind: str, root, cfg, generate, gen_settings: dict, progress=print, notes="",
                 cache_gaussians: bool = True, input_yaw_deg: float = 0.0, input_yaw_source: str = "default"):
        self.name, self.kind = name, kind
        self.input_yaw_deg = float(input_yaw_deg)
        self.input_yaw_source = input_yaw_source
        self.root = Path(root) / "methods" / name
        self.cfg = cfg
        self._generate = generate          # gt -> list[Gaussians]
        self.gen_settings = gen_settings
        self.align = AlignSettings.from_dict({**cfg.align, "seed": cfg.seed})
        self.progress = progress or (lambda *a, **k: None)
        self.notes = notes
        self.cache_gaussians = cache_gaussians

    def describe(self) -> dict:
        return {"kind": self.kind, "settings": self.gen_settings, "align": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in self.align.__dict__.items()}, "notes": self.notes,
            "input_view_yaw_deg": self.input_yaw_deg, "input_view_yaw_source": self.input_yaw_source}

    def _gen_key(self, gt) -> str:
        return _hash({"gen": self.gen_settings, "gt": gt.settings.key(), "asset": gt.asset_id})

    def gaussians_for(self, gt) -> tuple[list, float, bool]:
        """``(gaussians, seconds, cached)``; cached in ``gaussians.ss4d`` (export container) + ``gaussians.json``."""
        folder = self.root / gt.asset_id
        folder.mkdir(parents=True, exist_ok=True)
        if not self.cache_gaussians:
            t0 = time.perf_counter()
            return self._generate(gt), time.perf_counter() - t0, False
        gp, kp = folder / "gaussians.ss4d", folder / "gaussians.json"
        key = self._gen_key(gt)
        if gp.is_file() and kp.is_file():
            try:
                if json.loads(kp.read_text())["key"] == key:
                    return load_4d(gp)[0], 0.0, True
            except (json.JSONDecodeError, KeyError, OSError, RuntimeError, ValueError):
                pass  # unreadable or of another format: generate again
        t0 = time.perf_counter()
        gs = self._generate(gt)
        dt = time.perf_counter() - t0
        if len(gs) != gt.num_frames:
            raise MethodError("frame_count", f"{len(gs)} frames generated for {gt.num_frames} input frames")
        save_4d(gp, gs, 16.0, extra_meta={"method": self.name, "asset": gt.asset_id})
        kp.write_text(json.dumps({"key": key, "seconds": dt}), encoding="utf-8")
        return gs, dt, False

    def produce(self, gt) -> MethodOutput:
        folder = self.root / gt.asset_id
        fixed_dir = folder / self.FIXED_YAW
        key = _hash({"gen": self._gen_key(gt), "align": self.align.__dict__, "gt": gt.settings.key(),
                     "a0": gt.a0, "input_yaw": self.input_yaw_deg, "format": 2})
        status_p = folder / "status.json"
        if status_p.is_file():
            try:
                st = json.loads(status_p.read_text(encoding="utf-8"))
                if st.get("key") == key and all((folder / v).is_dir() and (fixed_dir / v).is_dir() for v in gt.views):
                    vox = _load_voxels(folder / "voxels.npz", gt.num_frames)
                    fvox = _load_voxels(fixed_dir / "voxels.npz", gt.num_frames)
                    info = dict(st["info"])
                    info["cached"] = True
                    return MethodOutput(folder, vox, None if vox is not None else "voxels unreadable", info,
                                        fixed_dir, fvox)
            except (json.JSONDecodeError, KeyError, OSError, ValueError):
                pass
        gs, t_gen, cached = self.gaussians_for(gt)
        self.progress(f"{self.name} {gt.asset_id}: {'reused' if cached else 'generated'} "
                      f"{len(gs)} frames{'' if cached else f' in {t_gen:.1f} s'}; aligning")
        inputs = torch.stack([torch.from_numpy(f).permute(2, 0, 1) for f in gt.input_frames()])
        t0 = time.perf_counter()
        pose = align_to_input(gs, inputs, fov_deg=gt.settings.fov_deg, radius=gt.settings.radius, settings=self.align)
        fixed = align_to_input(gs, inputs, fov_deg=gt.settings.fov_deg, radius=gt.settings.radius, settings=self.align,
                               fixed_azimuth_deg=self.input_yaw_deg)
        t_align = time.perf_counter() - t0
        t0 = time.perf_counter()
        voxels = self._render(gs, pose, gt, folder)
        fvoxels = self._render(gs, fixed, gt, fixed_dir)
        t_render = time.perf_counter() - t0
        scale, R = prediction_to_gt(pose, gt.a0, gt.settings.elevation_deg, gt.settings.radius)
        yaw_err = None if pose.empty else yaw_error_deg(pose.azimuth_deg, self.input_yaw_deg)
        info = {"pose": {**pose.to_dict(), "gt_input_azimuth_deg": gt.a0, "to_gt_scale": scale,
                         "to_gt_rotation": R.tolist()},
                "orientation": {"input_view_yaw_deg": self.input_yaw_deg,
                                "input_view_yaw_source": self.input_yaw_source, "yaw_error_deg": yaw_err,
                                "abs_yaw_error_deg": None if yaw_err is None else abs(yaw_err)},
                "fixed_yaw_pose": fixed.to_dict(),
                "num_gaussians": [len(g) for g in gs],
                "timing": {"generate_s": t_gen, "align_s": t_align, "render_s": t_render},
                "generated_cached": cached, "cached": False}
        if pose.empty:
            info["notes_method"] = [f"no Gaussian with opacity >= {self.align.min_opacity}: default pose"]
        (folder / "pose.json").write_text(json.dumps({**info["pose"], "orientation": info["orientation"],
                                                      "fixed_yaw": info["fixed_yaw_pose"]}, indent=1),
                                          encoding="utf-8")
        status_p.write_text(json.dumps({"key": key, "info": info}, indent=1), encoding="utf-8")
        return MethodOutput(folder, voxels, None, info, fixed_dir, fvoxels)

    def _render(self, gs, pose: Pose, gt, folder: Path) -> list:
        """Render every protocol view at ``pose`` into ``folder/<view>/`` (replaced atomically per view) and write
        the voxels of the prediction moved into the ground-truth box by the same pose; returns them."""
        folder.mkdir(parents=True, exist_ok=True)
        scale, R = prediction_to_gt(pose, gt.a0, gt.settings.elevation_deg, gt.settings.radius)
        voxels = prediction_voxels(gs, scale, R, gt.settings.resolution, self.align.min_opacity)
        for v in gt.views:
            shutil.rmtree(folder / v, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".renders-"))
        try:
            render_views(gs, pose, gt.settings, tmp, self.cfg.device)
            for v in gt.views:
                os.rename(tmp / v, folder / v)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _save_voxels(folder / "voxels.npz", voxels)
        return voxels


class EmptyMethod:
    """The ``empty`` baseline: no Gaussians, every render is the background alone (transparent RGBA, white once
    composited) and the geometry is empty - the floor every method's scores must clear."""

    kind = "empty"

    def __init__(self, root, name: str = "empty"):
        self.name = name
        self.root = Path(root) / "methods" / name

    def describe(self) -> dict:
        return {"kind": self.kind, "notes": "no Gaussians: every render is the white background; no voxels"}

    def produce(self, gt) -> MethodOutput:
        from .gt import frame_file, write_rgba

        folder = self.root / gt.asset_id
        H = W = int(gt.settings.size)
        blank = np.zeros((H, W, 4), np.uint8)
        for v in gt.views:
            d = folder / v
            if d.is_dir() and all((d / frame_file(t)).is_file() for t in range(gt.num_frames)):
                continue
            d.mkdir(parents=True, exist_ok=True)
            for t in range(gt.num_frames):
                write_rgba(d / frame_file(t), blank)
        voxels = [torch.zeros(0, 3, dtype=torch.long) for _ in range(gt.num_frames)]
        info = {"orientation": {"yaw_error_deg": None, "abs_yaw_error_deg": None}}
        return MethodOutput(folder, voxels, None, info, folder, voxels)


class PredictionsMethod:
    """Renders of an external method (``<dir>/<asset>/<view>/<frame>.png``), scored as they are."""

    kind = "predictions"

    def __init__(self, name: str, folder):
        self.name = name
        self.root = Path(folder)

    def describe(self) -> dict:
        return {"kind": self.kind, "folder": str(self.root.resolve()),
                "notes": "renders at the protocol cameras are scored as given (no alignment); geometry from "
                         "<asset>/voxels.npz when present"}

    def produce(self, gt) -> MethodOutput:
        folder = self.root / gt.asset_id
        if not folder.is_dir():
            raise MethodError("missing_predictions", f"no predictions for this asset ({folder} does not exist)")
        vp = folder / "voxels.npz"
        vox, reason = None, "renders only (no voxels.npz)"
        if vp.is_file():
            try:
                vox = _load_voxels(vp, gt.num_frames)
                reason = None if vox is not None else f"{vp.name} lacks some of the {gt.num_frames} frames"
            except Exception as e:  # noqa: BLE001
                reason = f"{vp.name} unreadable: {e}"
        return MethodOutput(folder, vox, reason, {"folder": str(folder)})


BASELINES = ("empty", "per-frame", "static", "latent-noise", "ablations") + ABLATION_NAMES


def input_yaw(cfg) -> tuple[float, str]:
    """Yaw of the input camera in the model's output frame and where it came from: ``--input-yaw``, else the model's
    training record (``input_view_yaw_deg``), else 0 (the pipeline's front camera)."""
    from .splits import load_training_record

    if getattr(cfg, "input_yaw_deg", None) is not None:
        return float(cfg.input_yaw_deg), "--input-yaw"
    if cfg.model:
        rec = load_training_record(cfg.model)
        if rec is not None and rec.input_view_yaw_deg is not None:
            return rec.input_view_yaw_deg, rec.source
    return 0.0, "default (no record: the pipeline's front camera, yaw 0)"


def build_methods(cfg, root, progress=print) -> list:
    """The methods of a run from an :class:`~ss4d.eval.protocol.EvalConfig`: the ``empty`` baseline always, then the
    model, its baselines and ablations, and external predictions."""
    from ss4d.errors import InputError

    progress = progress or (lambda *a, **k: None)
    methods: list = [EmptyMethod(root)]
    baselines = [b for b in cfg.baselines if b]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise InputError(f"unknown baseline(s) {unknown} (choose from {', '.join(BASELINES)})")
    ablations = [n for n in ABLATION_NAMES if n in baselines or "ablations" in baselines]
    of_model = [b for b in baselines if b != "empty"]
    if of_model and not cfg.model:
        raise InputError(f"--baselines {','.join(of_model)} needs --model (the baselines are variants of the model)")
    if cfg.model:
        from ss4d.pipeline.checkpoint_folder import read_pipeline_config
        from ss4d.pipeline.video_to_4d import VideoTo4DPipeline

        read_pipeline_config(cfg.model)      # a wrong --model fails here (CheckpointError), not once per asset
        try:
            yaw, yaw_src = input_yaw(cfg)
        except ValueError as e:
            raise InputError(str(e)) from None

        state: dict = {}

        def pipe():
            if "pipe" not in state:
                state["pipe"] = VideoTo4DPipeline.from_pretrained(cfg.model, device=cfg.device, dtype=cfg.dtype,
                                                                  dinov2_weights=cfg.dinov2_weights)
            return state["pipe"]

        def variant(key: str, temporal: bool, off: tuple):
            """The pipeline with temporal reasoning on/off and the additions ``off`` switched off (cached)."""
            if key not in state:
                base = pipe() if temporal else disable_temporal(pipe())
                state[key] = switch_off(base, off)
            return state[key]

        def run(key, temporal, off, gt):
            p, kw = variant(key, temporal, off)
            r = p(gt.input_frames(), seed=cfg.seed, steps=cfg.steps, cfg=cfg.cfg, **kw)
            return r.gaussians

        gen = {"model": str(Path(cfg.model).resolve()), "model_files": model_fingerprint(cfg.model), "seed": cfg.seed,
               "steps": cfg.steps, "cfg": cfg.cfg, "dtype": cfg.dtype}
        yw = {"input_yaw_deg": yaw, "input_yaw_source": yaw_src}
        model = GeneratedMethod(cfg.name, "model", root, cfg, lambda gt: run("full", True, (), gt), gen, progress,
                                **yw)
        methods.append(model)
        if "static" in baselines:
            def static(gt):
                gs, _, _ = model.gaussians_for(gt)
                return [gs[0]] * len(gs)
            methods.append(GeneratedMethod("static", "static", root, cfg, static, {**gen, "static": True}, progress,
                                           notes="the model's first-frame result held for all frames",
                                           cache_gaussians=False, **yw))
        if "latent-noise" in baselines:
            def latent_noise(gt):
                if "latent-noise" not in state:
                    p = copy.copy(pipe())
                    p.slat_params = {**p.slat_params, "steps": 0}
                    state["latent-noise"] = p
                return state["latent-noise"](gt.input_frames(), seed=cfg.seed, cfg=cfg.cfg).gaussians
            methods.append(GeneratedMethod(
                "latent-noise", "latent-noise", root, cfg, latent_noise, {**gen, "slat_steps": 0}, progress,
                notes="the full model with the latent flow's output replaced by its starting noise (0 latent-flow "
                      "steps): what SS4D's second stage contributes", **yw))
        all_off = tuple(a.name for a in ADDITIONS)
        if "per-frame" in baselines:
            methods.append(GeneratedMethod(
                "per-frame", "per-frame", root, cfg, lambda gt: run("per-frame", False, all_off, gt),
                {**gen, "temporal": "disabled", "additions_off": list(all_off)}, progress,
                notes="SS4D without its temporal modules: temporal reasoning disabled "
                      "(ss4d.eval.baselines.disable_temporal) and every non-SS4D addition off ("
                      + "; ".join(a.what for a in ADDITIONS) + ")", **yw))
        for name in ablations:
            add = next(a for a in ADDITIONS if f"no-{a.name}" == name)
            if not add.is_on(pipe()):
                progress(f"{name}: not run: the model does not use {add.name} ({add.what})")
                continue
            methods.append(GeneratedMethod(
                name, "ablation", root, cfg, lambda gt, n=add.name: run(f"no-{n}", True, (n,), gt),
                {**gen, "additions_off": [add.name]}, progress,
                notes=f"the full model with one non-SS4D addition off: {add.what}", **yw))
    names = {m.name for m in methods}
    for name, folder in cfg.predictions:
        if not Path(folder).is_dir():
            raise InputError(f"--predictions {folder}: no such folder")
        base, i = name, 2
        while name in names:
            name, i = f"{base}-{i}", i + 1
        names.add(name)
        methods.append(PredictionsMethod(name, folder))
    if len(methods) == 1:
        raise InputError("nothing to score: give --model and/or --predictions")
    return methods
