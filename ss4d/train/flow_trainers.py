"""The two flow stage trainers: 4D sparse-structure flow and 4D SLat flow (rectified flow, CFG dropout)."""
from __future__ import annotations

import torch

from ..pipeline.pixel_aligned import PixelAlignedFlow, pixel_aligned_features, wants_pixel_features
from ..pipeline.samplers import FlowEulerGuidanceIntervalSampler
from ..sparse.tensor import SparseTensor
from . import flow_matching as fm
from . import losses as L
from .latents import encode_slat, encode_ss_latents
from .trainer_base import (
    STREAM_MAIN,
    ConfigError,
    Trainer,
    TrainingError,
)
from .vae_trainers import _clip_rows

_FLOW_DEFAULTS = {"p_uncond": 0.1, "t_mean": 1.0, "t_std": 1.0, "t_dist": "logit_normal",
                  "sigma_min": fm.SIGMA_MIN, "preview_steps": 8, "preview_cfg": 0.0}


@torch.no_grad()
def preview_sample(flow, noise, cond, num_frames: int, c: dict):
    """A training preview drawn with the pipeline's own sampler (guidance interval [0.5, 1], rescaled time 3)."""
    sampler = FlowEulerGuidanceIntervalSampler(c["sigma_min"])
    return sampler.sample(lambda x, t, cc, **kw: flow(x, t, cc, **kw), noise, cond, torch.zeros_like(cond),
                          steps=c["preview_steps"], rescale_t=3.0, cfg_strength=c["preview_cfg"],
                          cfg_interval=(0.5, 1.0), num_frames=num_frames)


@torch.no_grad()
def sample_like(trainer, x0, cond, num_frames: int, coords=None, flow=None):
    """A preview sample of the trainer's flow (eval mode, seeded noise shaped like `x0`; sparse when `coords`);
    `flow`: the callable to sample with (default the trainer's flow model, e.g. a pixel-aligned wrapper of it)."""
    model = trainer.models["flow"]
    flow = model if flow is None else flow
    was = model.training
    model.eval()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(trainer.seed)).to(x0)
    x = SparseTensor(noise, coords, num_frames) if coords is not None else noise
    try:
        return preview_sample(flow, x, cond, num_frames, trainer.loss_cfg)
    finally:
        model.train(was)


class SSFlowTrainer(Trainer):
    """4D sparse-structure flow: rectified flow on the SS-VAE latents of every frame's occupancy, one t and
    one condition drop per clip."""

    stage = "ss_flow"
    roles = ("flow", "conditioner")
    frozen_roles = ("ss_encoder", "ss_decoder")
    loss_defaults = dict(_FLOW_DEFAULTS)
    required_keys = ("cond_frames",)

    def latents(self, batch):
        if "ss_latents" in batch:
            return batch["ss_latents"].float()
        if "ss_encoder" not in self.frozen:
            raise TrainingError("ss_flow needs batch['ss_latents'] or a frozen 'ss_encoder' model (config models)")
        if "occupancy" not in batch:
            raise TrainingError("ss_flow: batch lacks 'occupancy' to encode")
        return encode_ss_latents(self.frozen["ss_encoder"], batch["occupancy"])

    def _draws(self, batch, shapes):
        c = self.loss_cfg
        ts, drops, noises = [], [], []
        for g, shp in zip(self.generators(batch, STREAM_MAIN), shapes):
            ts.append(fm.sample_t(g, 1, c["t_mean"], c["t_std"], c["t_dist"]))
            drops.append(torch.rand(1, generator=g) < c["p_uncond"])
            noises.append(torch.randn(shp, generator=g))
        return torch.cat(ts), torch.cat(drops), noises

    def compute_loss(self, batch):
        T, B = int(batch["num_frames"]), self.num_clips(batch)
        x0 = self.latents(batch)
        t, drop, noise = self._draws(batch, [x0[b * T:(b + 1) * T].shape for b in range(B)])
        noise = torch.cat(noise).to(x0)
        tf = t.repeat_interleave(T).to(x0)
        sig = self.loss_cfg["sigma_min"]
        x_t = fm.diffuse(x0, tf, noise, sig)
        target = fm.velocity_target(x0, noise, sig)
        cond = fm.drop_condition(self.condition(batch, T), drop, T)
        pred = self.models["flow"](x_t, fm.model_time(t, T).to(x0.device), cond, num_frames=T).float()
        per = torch.stack([L.mse_loss(pred[b * T:(b + 1) * T], target[b * T:(b + 1) * T]) for b in range(B)])
        return per.mean(), {"mse": per.mean(), "t": t.mean()}

    @torch.no_grad()
    def preview(self, batch, out_dir, step):
        batch = self.to_device(self.check_batch(batch))
        T = int(batch["num_frames"])
        x0 = self.latents(batch)[:T]
        cond = self.models["conditioner"](batch["cond_frames"][:T]).float()
        z = sample_like(self, x0, cond, T)
        out = {"latent_mse": float((z - x0).square().mean())}
        if "ss_decoder" in self.frozen and "occupancy" in batch:
            pred = self.frozen["ss_decoder"](z)[:, 0] > 0
            occ = batch["occupancy"][:T]
            out["iou"] = (pred & occ).sum().item() / max((pred | occ).sum().item(), 1)
        return out


class SLatFlowTrainer(Trainer):
    """4D structured-latent flow on normalised SLat features (sparse), one t and one condition drop per clip."""

    stage = "slat_flow"
    roles = ("flow", "conditioner")
    frozen_roles = ("slat_encoder",)
    loss_defaults = dict(_FLOW_DEFAULTS)
    required_keys = ("cond_frames", "coords")

    def __init__(self, *a, normalization: dict | None = None, **kw):
        super().__init__(*a, **kw)
        self.set_normalization(normalization)

    def set_normalization(self, normalization: dict | None) -> None:
        n = normalization or {}
        c = self.models["flow"].out_channels
        self.slat_mean = torch.tensor(n.get("mean", [0.0] * c), dtype=torch.float32, device=self.device)
        self.slat_std = torch.tensor(n.get("std", [1.0] * c), dtype=torch.float32, device=self.device)
        if self.slat_mean.numel() != c or self.slat_std.numel() != c or (self.slat_std <= 0).any():
            raise ConfigError(f"slat normalization needs {c} means and {c} positive stds")

    def flow_for(self, batch, keep=None):
        """The flow, wrapped with the batch's pixel-aligned features when it takes them (`ss4d.pipeline.
        pixel_aligned`: the input frames seen through their rendered input cameras); `keep` selects rows."""
        flow = self.models["flow"]
        if not wants_pixel_features(flow):
            return flow
        missing = [k for k in ("cond_frames", "cond_alpha", "cond_cameras") if k not in batch]
        if missing:
            raise TrainingError(f"a pixel-aligned latent flow needs clips with {missing} (RGBA input frames and "
                                "their cameras)")
        res = int(getattr(flow, "resolution", 64))
        pix = pixel_aligned_features(batch["coords"], res, batch["cond_frames"], batch["cond_alpha"],
                                     batch["cond_cameras"])
        if keep is not None:
            pix = pix[keep.cpu()]
        return PixelAlignedFlow(flow, pix.to(self.device))

    def latents(self, batch):
        T, B = int(batch["num_frames"]), self.num_clips(batch)
        if "slat" in batch:
            z = batch["slat"].float()
        else:
            if "slat_encoder" not in self.frozen:
                raise TrainingError("slat_flow needs batch['slat'] or a frozen 'slat_encoder' model (config models)")
            if "feats" not in batch:
                raise TrainingError("slat_flow: batch lacks 'feats' to encode")
            z = encode_slat(self.frozen["slat_encoder"], batch["coords"], batch["feats"], T, B * T).feats
        return (z - self.slat_mean) / self.slat_std

    def compute_loss(self, batch):
        T, B = int(batch["num_frames"]), self.num_clips(batch)
        coords = batch["coords"]
        x0 = self.latents(batch)
        rows = _clip_rows(coords, B, T)
        c = self.loss_cfg
        ts, drops, noises = [], [], []
        for g, sl in zip(self.generators(batch, STREAM_MAIN), rows):
            ts.append(fm.sample_t(g, 1, c["t_mean"], c["t_std"], c["t_dist"]))
            drops.append(torch.rand(1, generator=g) < c["p_uncond"])
            noises.append(torch.randn((sl.stop - sl.start, x0.shape[1]), generator=g))
        t, drop = torch.cat(ts), torch.cat(drops)
        noise = torch.cat(noises).to(x0)
        t_rows = t.to(x0)[(coords[:, 0].long() // T)]
        x_t = fm.diffuse(x0, t_rows, noise, c["sigma_min"])
        target = fm.velocity_target(x0, noise, c["sigma_min"])
        cond = fm.drop_condition(self.condition(batch, T), drop, T)
        xs = SparseTensor(x_t, coords, B * T)
        pred = self.flow_for(batch)(xs, fm.model_time(t, T).to(x0.device), cond, num_frames=T).feats.float()
        per = torch.stack([L.mse_loss(pred[sl], target[sl]) for sl in rows])
        return per.mean(), {"mse": per.mean(), "t": t.mean()}

    @torch.no_grad()
    def preview(self, batch, out_dir, step):
        batch = self.to_device(self.check_batch(batch))
        T = int(batch["num_frames"])
        coords = batch["coords"]
        keep = coords[:, 0] < T
        x0 = self.latents(batch)[keep]
        cond = self.models["conditioner"](batch["cond_frames"][:T]).float()
        z = sample_like(self, x0, cond, T, coords[keep], flow=self.flow_for(batch, keep))
        return {"latent_mse": float((z.feats - x0).square().mean()), "sample_std": float(z.feats.std())}
