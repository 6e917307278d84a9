"""VideoTo4DPipeline: RGBA frames -> per-frame 3D Gaussians (SS4D inference, spec §1).

Stages: conditioning (one image encoder pass per frame) -> sparse structure (4D flow over per-frame 16^3
latents, decoded to per-frame occupancy) -> spacetime latents (4D sparse flow over all voxels) -> Gaussians per
frame. Noise is drawn from a CPU generator seeded with `seed`, exactly as the official `torch.manual_seed(seed)`
followed by `torch.randn(...)`, so results match the official pipeline for the same weights and seed.
"""
from __future__ import annotations

import resource
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..gaussians import Gaussians
from ..models.checkpoint import CheckpointError
from ..render.preview import gaussians_to_voxels
from ..sparse.tensor import SparseTensor
from .checkpoint_folder import (
    PipelineConfig,
    default_model_dir,
    load_image_cond,
    load_pipeline_models,
    read_pipeline_config,
)
from .pixel_aligned import PixelAlignedFlow, pixel_aligned_features, wants_pixel_features
from .samplers import SamplerTrace, build_sampler
from .silhouette import SilhouetteGuide, read_silhouette_settings
from .silhouette_fit import center_in_view, fit_silhouettes, read_silhouette_fit

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Progress:
    """One tqdm bar per stage (silent when disabled)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def stage(self, name: str, total: int):
        if not self.enabled:
            return lambda i, n: None
        from tqdm import tqdm

        bar = tqdm(total=total, desc=name, leave=True, dynamic_ncols=True)

        def update(i, n):
            bar.update(i - bar.n)
            if i >= n:
                bar.close()
        return update


def _strength(value, what: str, error=ValueError) -> float:
    """A colour-transfer setting (bool or a number in [0, 1]) as a strength in [0, 1]."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)) and 0.0 <= float(value) <= 1.0:
        return float(value)
    raise error(f"{what} must be true/false or a number in [0, 1], got {value!r}")


# known post-steps (ss4d additions, not in SS4D), see docs/pipeline.md
POST_STEPS = ("color_from_input", "silhouette_fit", "center_on_input")


def read_post_steps(extra: dict) -> list[dict]:
    """`post_steps` of pipeline.json as `[{"name", ...}]` in run order: each entry a name or `{"name", ...args}`.
    The older `"color_from_input": true | strength` field stands for `[{"name": "color_from_input", ...}]`."""
    raw = extra.get("post_steps")
    if raw is None:
        legacy = _strength(extra.get("color_from_input", False), "pipeline.json: color_from_input", CheckpointError)
        return [{"name": "color_from_input", "strength": legacy}] if legacy > 0 else []
    if "color_from_input" in extra:
        raise CheckpointError("pipeline.json: give the colour transfer either in post_steps or as color_from_input, "
                              "not both")
    if not isinstance(raw, list):
        raise CheckpointError(f"pipeline.json: post_steps must be a list, got {raw!r}")
    steps = []
    for entry in raw:
        st = {"name": entry} if isinstance(entry, str) else dict(entry) if isinstance(entry, dict) else None
        if st is None or st.get("name") not in POST_STEPS:
            raise CheckpointError(f"pipeline.json: unknown post-step {entry!r}; known: {', '.join(POST_STEPS)}")
        if any(s["name"] == st["name"] for s in steps):
            raise CheckpointError(f"pipeline.json: post-step {st['name']!r} listed twice")
        if st["name"] == "color_from_input":
            st["strength"] = _strength(st.get("strength", 1.0), "pipeline.json: color_from_input strength",
                                       CheckpointError)
        if st["name"] == "silhouette_fit":
            read_silhouette_fit(st, CheckpointError)
        steps.append(st)
    return steps


@dataclass
class VideoTo4DResult:
    """Per-frame Gaussians and voxels, the preprocessed input frames and a timing summary."""

    gaussians: list[Gaussians]
    coords: list[torch.Tensor]                 # [N_t, 3] int voxel coords per frame
    frames: np.ndarray                         # [T, S, S, 3] uint8 preprocessed (premultiplied) input
    fps: float = 16.0
    timings: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.gaussians)

    def summary(self) -> str:
        parts = [f"{k} {v:.2f}s" for k, v in self.timings.items()]
        return f"{self.num_frames} frames, " + ", ".join(parts) + f", peak RSS {self.peak_rss_mb:.0f} MB"


class VideoTo4DPipeline:
    def __init__(self, models: dict, image_cond: torch.nn.Module, config: PipelineConfig,
                 device="cpu", dtype: torch.dtype = torch.float32):
        self.models, self.image_cond, self.config = models, image_cond, config
        self.device, self.dtype = torch.device(device), dtype
        self.ss_sampler = build_sampler(config.ss_sampler["name"], config.ss_sampler.get("args"))
        self.slat_sampler = build_sampler(config.slat_sampler["name"], config.slat_sampler.get("args"))
        self.ss_params = dict(config.ss_sampler.get("params", {}))
        self.slat_params = dict(config.slat_sampler.get("params", {}))
        # "independent" (official): fresh noise per frame. "shared" (an ss4d option, `temporal_noise` in
        # pipeline.json): every frame starts from the same noise (the latent flow: the same noise at the same voxel
        # position), so frames that the model has not learnt to tie together still differ only where the input does
        self.temporal_noise = str(config.extra.get("temporal_noise", "independent"))
        if self.temporal_noise not in ("independent", "shared"):
            raise CheckpointError(f"pipeline.json: temporal_noise must be 'independent' or 'shared', "
                                  f"got {self.temporal_noise!r}")
        # ss4d option: silhouette guidance of the structure sampler (ss4d.pipeline.silhouette); off when absent
        self.silhouette = read_silhouette_settings(config.extra.get("silhouette_guidance"), CheckpointError)
        # steps after decoding that are not part of SS4D, in order (`post_steps` in pipeline.json)
        self.post_steps = read_post_steps(config.extra)
        cfi = [st for st in self.post_steps if st["name"] == "color_from_input"]
        # the colour transfer's strength (0 = off): the one knob the CLI and the evaluation's ablations turn
        self.color_from_input = cfi[0]["strength"] if cfi else 0.0

    @classmethod
    def from_pretrained(cls, path=None, device="cpu", dtype: str | torch.dtype = "fp32",
                        dinov2_weights: str | None = None) -> VideoTo4DPipeline:
        """Load an official-layout folder (`pipeline.json` + `ckpts/`); None = the bundled default model."""
        if isinstance(dtype, str):
            if dtype not in DTYPES:
                raise ValueError(f"dtype must be one of {list(DTYPES)}")
            dtype = DTYPES[dtype]
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda requested but CUDA is not available")
        cfg = read_pipeline_config(path if path is not None else default_model_dir())
        models = load_pipeline_models(cfg, device, dtype)
        image_cond = load_image_cond(cfg, device, dinov2_weights)
        return cls(models, image_cond, cfg, device, dtype)

    def _encoders(self) -> dict:
        ic = self.image_cond
        if isinstance(ic, dict):
            return ic
        return {"sparse_structure_flow_model": ic, "slat_flow_model": ic}

    @property
    def image_size(self) -> int:
        return int(getattr(self._encoders()["sparse_structure_flow_model"], "image_size", 518))

    @property
    def max_frames(self) -> int:
        return self.config.num_frames

    # ----- stages -----
    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> dict[str, torch.Tensor]:
        """Conditioning tokens per flow model (the same tensor when both flows share one encoder)."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255).to(self.device)
        encs = self._encoders()
        out: dict = {}
        for k, enc in encs.items():
            same = [j for j in out if encs[j] is enc]
            out[k] = out[same[0]] if same else enc(x).float()
        return out

    def _wrap(self, model):
        dt = self.dtype

        def call(x, t, cond, **kw):
            xin = x.replace(x.feats.to(dt)) if isinstance(x, SparseTensor) else x.to(dt)
            out = model(xin, t, cond.to(dt), **kw)
            return out.replace(out.feats.float()) if isinstance(out, SparseTensor) else out.float()
        return call

    @torch.no_grad()
    def sample_structure(self, cond, gen: torch.Generator, steps=None, cfg=None, progress=None,
                         trace: dict | None = None, masks=None, view_out: dict | None = None):
        """Stage 1: coords [N, 4] (frame, x, y, z) of the occupied voxels. `trace` (a dict) receives the noise,
        the sampler's per-call record, the latent and the occupancy logits. `masks` ([T, H, W] input alpha) enable
        the silhouette guidance / carving set in `self.silhouette`; `view_out` (a dict) then receives the input view
        that carving / filling used (``yaw_deg``, ``pitch_deg``, ``crop``)."""
        flow = self.models["sparse_structure_flow_model"]
        T = cond.shape[0]
        r = flow.resolution
        if self.temporal_noise == "shared":
            noise = torch.randn(1, flow.in_channels, r, r, r, generator=gen).expand(T, -1, -1, -1, -1).contiguous()
        else:
            noise = torch.randn(T, flow.in_channels, r, r, r, generator=gen)
        noise = noise.to(self.device)
        params = self._params(self.ss_params, steps, cfg)
        strace = SamplerTrace() if trace is not None else None
        decoder = self.models["sparse_structure_decoder"]
        guide = None
        if masks is not None and self.silhouette.enabled:
            guide = SilhouetteGuide(decoder, masks, self.silhouette, self.dtype)
        z = self.ss_sampler.sample(self._wrap(flow), noise, cond, torch.zeros_like(cond), num_frames=T,
                                   progress=progress, trace=strace,
                                   guide=guide if guide is not None and self.silhouette.strength > 0 else None,
                                   **params)
        logits = decoder(z.to(self.dtype)).float()
        if trace is not None:
            trace.update(ss_noise=noise, ss_sampler=strace, ss_latent=z, ss_logits=logits)
        refine = guide is not None and (self.silhouette.carve or self.silhouette.fill)
        occ = guide.refine(logits) if refine else logits[:, 0] > 0
        if refine and view_out is not None:
            view_out.update(guide.chosen_view)
        if trace is not None and guide is not None:
            trace["silhouette_views"] = guide.views
        return self._fill_empty(occ)

    def _fill_empty(self, occ: torch.Tensor) -> torch.Tensor:
        """coords [N, 4] (frame, x, y, z) sorted; a frame with no voxel borrows its nearest non-empty frame's."""
        counts = occ.flatten(1).sum(1)
        if int(counts.sum()) == 0:
            raise RuntimeError("the sparse-structure stage produced no voxels in any frame")
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            full = (counts > 0).nonzero().flatten()
            for f in empty:
                occ[f] = occ[int(full[(full - f).abs().argmin()])]
            warnings.warn(f"frames {empty} had no voxels; copied the nearest non-empty frame's structure",
                          stacklevel=2)
        return torch.argwhere(occ).int()

    @torch.no_grad()
    def sample_latents(self, cond, coords, gen: torch.Generator, steps=None, cfg=None, progress=None,
                       trace: dict | None = None, pixel_features: torch.Tensor | None = None):
        """Stage 2: the de-normalised structured latent (SparseTensor over `coords`). `trace` (a dict) receives the
        noise, the sampler's per-call record and the normalised latent. `pixel_features` ([N, 5], rows of `coords`)
        feed a pixel-aligned latent flow (:mod:`ss4d.pipeline.pixel_aligned`; required by one)."""
        flow = self.models["slat_flow_model"]
        T = cond.shape[0]
        C = int(getattr(flow, "out_channels", flow.in_channels))
        if self.temporal_noise == "shared":
            r = flow.resolution
            table = torch.randn(r ** 3, C, generator=gen)
            c = coords.long().cpu()
            eps = table[(c[:, 1] * r + c[:, 2]) * r + c[:, 3]]
        else:
            eps = torch.randn(coords.shape[0], C, generator=gen)
        noise = SparseTensor(eps.to(self.device), coords.to(self.device), batch_size=T)
        model = flow
        if wants_pixel_features(flow):
            if pixel_features is None:
                raise ValueError("this latent flow is pixel-aligned: pass pixel_features (see _run_window)")
            model = PixelAlignedFlow(flow, pixel_features.to(self.device))
        params = self._params(self.slat_params, steps, cfg)
        strace = SamplerTrace() if trace is not None else None
        if int(params.get("steps", 1)) == 0:  # an ablation: the starting noise stands for the flow's output
            slat = noise
        else:
            slat = self.slat_sampler.sample(self._wrap(model), noise, cond, torch.zeros_like(cond), num_frames=T,
                                            progress=progress, trace=strace, **params)
        if trace is not None:
            trace.update(slat_noise=noise.feats, slat_sampler=strace, slat_latent=slat.feats)
        if self.config.slat_std is not None:
            std = torch.tensor(self.config.slat_std, device=slat.device)[None]
            mean = torch.tensor(self.config.slat_mean, device=slat.device)[None]
            slat = slat.replace(slat.feats * std + mean)
        return slat

    @torch.no_grad()
    def decode(self, slat: SparseTensor, num_frames: int) -> list[Gaussians]:
        dec = self.models["slat_decoder_gs"]
        gs = dec(slat.replace(slat.feats.to(self.dtype)), num_frames)
        return [g.to(dtype=torch.float32) for g in gs]

    @staticmethod
    def _params(base: dict, steps, cfg) -> dict:
        p = dict(base)
        if steps is not None:
            p["steps"] = int(steps)
        if cfg is not None:
            p["cfg_strength"] = float(cfg)
        return p

    # ----- whole job -----
    def generate(self, frames: Sequence[np.ndarray] | np.ndarray, seed: int = 42, steps: int | None = None,
                 cfg: float | None = None, fps: float | None = 16.0, progress: bool = False,
                 preprocessed: bool = False, color_from_input: bool | float | None = None,
                 num_frames: int | None = None, stride: int | None = None,
                 trace: dict | None = None) -> VideoTo4DResult:
        """The whole job (what `ss4d generate`, the Python API and `ss4d evaluate` run): pick the frames (`num_frames`
        spread uniformly, or every `stride`-th; default all, at most the model's frame count), then one window, or
        for more frames than the model takes, overlapping windows stitched frame by frame (each frame from the window
        where it is most central; see :func:`ss4d.pipeline.frames.split_windows`).

        `frames`: RGBA uint8 frames (HxWx4), or with `preprocessed=True` premultiplied RGB at image_size (the mask
        is then taken from the black surround). `fps`: the input's frame rate (None: unknown, the result plays at
        16); the result's rate follows the frame selection. `color_from_input`: None = the model folder's setting.
        `trace`: a dict that receives every intermediate (conditioning, noises, sampler records, latents, logits) of
        a one-window job, for comparing a run link by link with a reference."""
        from .frames import assign_frames_to_windows, select_frames, split_windows

        frames = list(frames)
        n = len(frames)
        if num_frames or stride:
            idx = select_frames(n, num=num_frames, stride=stride, mode="stride" if stride else "uniform")
        else:
            idx = select_frames(n, num=min(n, self.max_frames))
        frames = [frames[i] for i in idx]
        out_fps = float(fps) * len(idx) / max(n, 1) if fps else 16.0
        kw = dict(seed=seed, steps=steps, cfg=cfg, fps=out_fps, progress=progress, preprocessed=preprocessed,
                  color_from_input=color_from_input)
        if len(frames) <= self.max_frames:
            return self._run_window(frames, trace=trace, **kw)
        if trace is not None:
            raise ValueError("trace records one window; this job has several (pass at most "
                             f"{self.max_frames} frames)")
        windows = split_windows(len(frames), self.max_frames, overlap=self.max_frames // 4)
        parts = [self._run_window(frames[w.start:w.stop], **kw) for w in windows]
        pick = assign_frames_to_windows(len(frames), windows)
        base = parts[0]
        base.gaussians = [parts[w].gaussians[i] for w, i in pick]
        base.coords = [parts[w].coords[i] for w, i in pick]
        base.frames = np.stack([parts[w].frames[i] for w, i in pick])
        base.timings = {k: sum(p.timings.get(k, 0.0) for p in parts) for k in base.timings}
        base.peak_rss_mb = _peak_rss_mb()
        base.meta["windows"] = [[w.start, w.stop] for w in windows]
        base.meta["num_voxels"] = [int(c.shape[0]) for c in base.coords]
        base.meta.pop("input_view", None)  # each window was cropped and posed on its own: renders re-estimate
        return base

    __call__ = generate

    def _run_window(self, frames, seed: int = 42, steps: int | None = None, cfg: float | None = None,
                    fps: float = 16.0, progress: bool = False, preprocessed: bool = False,
                    color_from_input: bool | float | None = None, trace: dict | None = None) -> VideoTo4DResult:
        """One window of at most `max_frames` frames through every stage, then the post-steps in order."""
        from ..media.masks import mask_from_premultiplied
        from .preprocess import preprocess_frames

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if preprocessed:
            pre = np.asarray(frames)
            alpha = mask_from_premultiplied(pre).astype(np.uint8) * 255
        else:
            pre, alpha, _box = preprocess_frames(list(frames), size=self.image_size)
        T = len(pre)
        if T < 2:
            raise ValueError("need at least 2 frames")
        pad = T % 2
        if pad:  # the latent flow pairs frames: repeat the last frame and drop its result
            pre, alpha = np.concatenate([pre, pre[-1:]], 0), np.concatenate([alpha, alpha[-1:]], 0)
        timings["preprocess"] = time.perf_counter() - t0
        bars = _Progress(progress)
        t0 = time.perf_counter()
        cond = self.encode(pre)
        if trace is not None:
            trace["cond"] = cond
        timings["conditioning"] = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(int(seed))
        t0 = time.perf_counter()
        ss_bar = bars.stage("sparse structure", self._steps(self.ss_params, steps))
        structure_view: dict = {}
        coords = self.sample_structure(cond["sparse_structure_flow_model"], gen, steps, cfg, ss_bar, trace,
                                       masks=alpha, view_out=structure_view)
        timings["sparse_structure"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        pixel_features = None
        if wants_pixel_features(self.models["slat_flow_model"]):
            pixel_features, meta_view = self.pixel_features(coords, pre, alpha, structure_view or None)
        slat_bar = bars.stage("spacetime latents", self._steps(self.slat_params, steps))
        slat = self.sample_latents(cond["slat_flow_model"], coords, gen, steps, cfg, slat_bar, trace,
                                   pixel_features=pixel_features)
        if trace is not None:
            trace["slat"] = slat
        timings["spacetime_latents"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        gaussians = self.decode(slat, len(pre))
        timings["decode"] = time.perf_counter() - t0
        per_frame = [slat.coords[sl, 1:].cpu() for sl in slat.layout]
        if pad:
            gaussians, per_frame, pre, alpha = gaussians[:T], per_frame[:T], pre[:T], alpha[:T]
        meta = {"seed": int(seed), "num_voxels": [int(c.shape[0]) for c in per_frame]}
        if pixel_features is not None:
            meta["structure_view"] = meta_view
        strength = self.color_from_input if color_from_input is None else _strength(color_from_input,
                                                                                   "color_from_input")
        names = [st["name"] for st in self.post_steps if st["name"] != "color_from_input" or strength > 0]
        if strength > 0 and "color_from_input" not in names:
            names.append("color_from_input")  # switched on for this call only
        for name in names:
            t0 = time.perf_counter()
            if name == "color_from_input":
                gaussians, meta["input_view"] = self.recolor(gaussians, per_frame, pre, alpha, strength)
            elif name == "silhouette_fit":
                settings = read_silhouette_fit(next(st for st in self.post_steps if st["name"] == name))
                gaussians, meta["fit_view"] = self.fit_silhouettes(gaussians, per_frame, pre, alpha, settings,
                                                                   structure_view or None)
                if meta["fit_view"] is not None:  # the output lines up with the input in this view: renders reuse it
                    meta["input_view"] = dict(meta["fit_view"])
            elif name == "center_on_input":
                gaussians, meta["center_shift"], view = self.center_on_input(gaussians, per_frame, pre, alpha,
                                                                             structure_view or None)
                if view is not None:
                    meta["input_view"] = view
            if name in ("silhouette_fit", "center_on_input"):  # voxels follow the Gaussians they moved / faded
                res = int(getattr(self.models["slat_decoder_gs"], "resolution", 64))
                per_frame = [torch.from_numpy(gaussians_to_voxels(g, res)) for g in gaussians]
            timings[name] = time.perf_counter() - t0
        meta["post_steps"] = names
        return VideoTo4DResult(gaussians, per_frame, pre, fps, timings, _peak_rss_mb(), meta=meta)

    def pixel_features(self, coords: torch.Tensor, frames: np.ndarray, alpha: np.ndarray, view: dict | None = None):
        """Pixel-aligned features of the voxels `coords [N, 4]` (:mod:`ss4d.pipeline.pixel_aligned`) through `view`
        (the structure stage's carving view), or else the input view estimated from the structure's silhouettes
        alone. Returns `(features [N, 5], view)`."""
        from ..render.input_view import estimate_input_view, input_view_camera

        res = int(self.models["slat_flow_model"].resolution)
        T = len(frames)
        per_frame = [coords[coords[:, 0] == f, 1:].cpu() for f in range(T)]
        if view is None:
            view = estimate_input_view(None, frames, alpha, coords=per_frame, voxel_resolution=res)
        if view is None:
            view = {"yaw_deg": 0.0, "pitch_deg": 0.0, "crop": None}
        cam = input_view_camera(view, frames.shape[1])
        f = torch.from_numpy(np.ascontiguousarray(frames)).float().permute(0, 3, 1, 2) / 255.0
        a = torch.from_numpy(np.ascontiguousarray(alpha)).float()
        a = a / 255.0 if np.asarray(alpha).dtype == np.uint8 else a
        return pixel_aligned_features(coords, res, f, a, [cam] * T), view

    def fit_silhouettes(self, gaussians: list[Gaussians], coords: list[torch.Tensor], frames: np.ndarray,
                        alpha: np.ndarray, settings, view: dict | None = None) -> tuple[list[Gaussians], dict | None]:
        """Fit the Gaussians to the input masks (:mod:`ss4d.pipeline.silhouette_fit`) in `view` (the structure
        stage's carving view), or else in the view estimated from the voxels' silhouettes. Returns
        ``(gaussians, view)``; unchanged Gaussians and None when no view fits."""
        from ..render.input_view import input_view_camera

        view = self._voxel_view(frames, alpha, coords, view)
        if view is None:
            return gaussians, None
        cam = input_view_camera(view, frames.shape[1])
        res = int(getattr(self.models["slat_decoder_gs"], "resolution", 64))
        return fit_silhouettes(gaussians, alpha, cam, settings, voxel_size=1.0 / res), view

    def _voxel_view(self, frames: np.ndarray, alpha: np.ndarray, coords: list[torch.Tensor], view: dict | None):
        """`view` when given, else the input view estimated from the voxels' silhouettes (None when none fits)."""
        from ..render.input_view import estimate_input_view

        if view is not None:
            return view
        res = int(getattr(self.models["slat_decoder_gs"], "resolution", 64))
        return estimate_input_view(None, frames, alpha, coords=coords, voxel_resolution=res)

    def center_on_input(self, gaussians: list[Gaussians], coords: list[torch.Tensor], frames: np.ndarray,
                        alpha: np.ndarray, view: dict | None = None
                        ) -> tuple[list[Gaussians], list[float] | None, dict | None]:
        """Move the Gaussians so the input camera looks at the middle of their silhouette
        (:func:`ss4d.pipeline.silhouette_fit.center_in_view`) in `view` (the structure stage's carving view), or else
        in the view estimated from the voxels. Returns ``(gaussians, world shift, view after the move)`` (the crop
        re-centred on the image centre); unchanged Gaussians and None, None when no view fits."""
        view = self._voxel_view(frames, alpha, coords, view)
        if view is None:
            return gaussians, None, None
        moved, shift = center_in_view(gaussians, view)
        after = dict(view)
        if view.get("crop") is not None:
            x0, y0, x1, y1 = view["crop"]
            dx, dy = 0.5 - (x0 + x1) / 2, 0.5 - (y0 + y1) / 2
            after["crop"] = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        return moved, [float(v) for v in shift], after

    def recolor(self, gaussians: list[Gaussians], coords: list[torch.Tensor], frames: np.ndarray, alpha: np.ndarray,
                strength: float = 1.0) -> tuple[list[Gaussians], dict | None]:
        """Estimate the input view from silhouettes and recolour the Gaussians from the input frames
        (:mod:`ss4d.pipeline.colorize`). Returns ``(gaussians, view)``; unchanged Gaussians and None when no view
        fits (no voxels)."""
        from ..render.input_view import estimate_input_view, input_view_camera
        from .colorize import transfer_input_colors

        res = int(getattr(self.models["slat_decoder_gs"], "resolution", 64))
        view = estimate_input_view(gaussians, frames, alpha, coords=coords, voxel_resolution=res)
        if view is None:
            return gaussians, None
        cam = input_view_camera(view, frames.shape[1])
        return transfer_input_colors(gaussians, frames, alpha, cam, strength), view

    @staticmethod
    def _steps(base, steps):
        return int(steps if steps is not None else base.get("steps", 25))
