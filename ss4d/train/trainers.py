"""Stage trainers: sparse-structure VAE, 4D SLat (Gaussian) VAE, 4D sparse-structure flow, 4D SLat flow.

All four share `Trainer`: AdamW, EMA copies kept outside the models, (adaptive) gradient clipping, optional
bf16/fp16 autocast (+ grad scaler for fp16), data-parallel gradient averaging over `torch.distributed` (or FSDP
sharding), a NaN/Inf guard that raises before any update, and `state_dict()` for exact resume.

Batch format (see `docs/training.md`), `B` clips of `T` frames, frame-major inside a clip:
* `cond_frames float [B*T, 3, H, W]` in [0, 1] (conditioning video, premultiplied on black),
* `occupancy bool [B*T, R, R, R]`,
* `coords int32 [N, 4]` with `b = clip * T + frame`, rows of one frame contiguous, `feats float [N, F]`,
* `views float [B*T, V, 4, S, S]` RGBA renders + `cameras`: per frame a list of `V` `Camera`s,
* `num_frames` = T; optional `ss_latents [B*T, 8, r, r, r]` / `slat [N, 8]` (precomputed latents) and
  `slots` (global positions of the clips in the global batch: they seed the per-clip random streams).

Randomness: every random draw of a step comes from per-clip generators seeded by `(seed, step, slot, stream)`,
so the result of a step does not depend on how the global batch is split over processes, on the process RNG
state or on an interruption; losses are averaged per clip first, then over clips.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import math

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError
from ..render.rasterizer import rasterize
from ..sparse.tensor import SparseTensor
from . import flow_matching as fm
from . import losses as L

__all__ = ["TrainingError", "NonFiniteLossError", "ConfigError", "clip_generator", "Trainer", "SSVAETrainer",
           "SLatVAETrainer", "SSFlowTrainer", "SLatFlowTrainer", "TRAINERS", "encode_ss_latents", "encode_slat",
           "slat_normalization_stats", "AdaptiveGradClipper", "EXPORT_NAMES"]


class TrainingError(RuntimeError):
    """Training cannot continue (bad batch, non-finite loss, ...)."""


class NonFiniteLossError(TrainingError):
    """The loss (or gradient norm) became NaN/Inf; training stops without writing a checkpoint."""


class ConfigError(InputError):
    """A training configuration is invalid (unknown key, wrong value)."""


def _check_keys(section: str, given: dict, known) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in {section}: {', '.join(unknown)}; known: {', '.join(sorted(known))}")


# ----------------------------------------------------------------------------------------------------------------
# random streams
# ----------------------------------------------------------------------------------------------------------------
STREAM_MAIN, STREAM_AUG, STREAM_RENDER = 0, 1, 2


def clip_generator(seed: int, step: int, slot: int, stream: int = STREAM_MAIN) -> torch.Generator:
    """CPU generator of the random stream `stream` of global-batch slot `slot` at `step`."""
    h = hashlib.blake2b(f"{seed}/{step}/{slot}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))


# ----------------------------------------------------------------------------------------------------------------
# latent preparation
# ----------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_ss_latents(encoder: nn.Module, occupancy: torch.Tensor, chunk: int = 16) -> torch.Tensor:
    """Occupancy `bool [F, R, R, R]` -> sparse-structure latents `[F, C, r, r, r]` (encoder mean, no sampling)."""
    if occupancy.dim() != 4:
        raise ValueError(f"occupancy must be [frames, R, R, R], got {tuple(occupancy.shape)}")
    p = next(encoder.parameters())
    outs = []
    for s in range(0, occupancy.shape[0], chunk):
        x = occupancy[s:s + chunk].to(device=p.device, dtype=p.dtype)[:, None]
        outs.append(encoder(x, sample_posterior=False).float())
    return torch.cat(outs)


@torch.no_grad()
def _check_feats(encoder: nn.Module, feats: torch.Tensor) -> None:
    lin = getattr(encoder, "input_layer", None)
    want = getattr(lin, "in_features", None)
    if want is not None and (feats.dim() != 2 or feats.shape[1] != want):
        raise TrainingError(f"voxel features have shape {tuple(feats.shape)} but the SLat encoder expects "
                            f"[N, {want}] (set the encoder's in_channels to the data set's feature width)")


def encode_slat(encoder: nn.Module, coords: torch.Tensor, feats: torch.Tensor, num_frames: int,
                batch_size: int | None = None) -> SparseTensor:
    """Voxel features -> structured latents (SLat encoder mean, `sample_posterior=False`), same coords."""
    _check_feats(encoder, feats)
    p = next(encoder.parameters())
    x = SparseTensor(feats.to(device=p.device, dtype=p.dtype), coords.to(p.device), batch_size)
    z = encoder(x, num_frames=num_frames, sample_posterior=False)
    return z.replace(z.feats.float())


def slat_normalization_stats(latents) -> dict:
    """Per-channel SLat normalisation from an iterable of per-clip latents (`[N, C]` tensors or SparseTensors):
    `mean` = mean of the per-clip channel means, `std = sqrt(E[x^2] - E[x]^2)` with `E[x^2]` the mean of the
    per-clip channel means of `x^2` (TRELLIS `dataset_toolkits` convention)."""
    m1, m2 = [], []
    for z in latents:
        f = z.feats if isinstance(z, SparseTensor) else z
        f = f.double()
        if f.shape[0] == 0:
            continue
        m1.append(f.mean(0))
        m2.append(f.square().mean(0))
    if not m1:
        raise ValueError("slat_normalization_stats: no latents")
    mean = torch.stack(m1).mean(0)
    std = (torch.stack(m2).mean(0) - mean.square()).clamp_min(0).sqrt()
    return {"mean": mean.float().tolist(), "std": std.float().tolist()}


# ----------------------------------------------------------------------------------------------------------------
# gradient clipping
# ----------------------------------------------------------------------------------------------------------------
class AdaptiveGradClipper:
    """TRELLIS `AdaptiveGradClipper`: clip the global grad norm at `max_norm`; once `history` finite norms are
    buffered, at `min(max_norm, percentile(clip_percentile) of the buffered norms)`. `clip_percentile=None`
    gives plain clipping."""

    def __init__(self, max_norm: float = 1.0, clip_percentile: float | None = None, history: int = 1000):
        self.max_norm, self.clip_percentile, self.history = float(max_norm), clip_percentile, int(history)
        self.buffer: collections.deque = collections.deque(maxlen=self.history)

    def threshold(self) -> float:
        if self.clip_percentile is None or len(self.buffer) < self.history:
            return self.max_norm
        q = torch.quantile(torch.tensor(list(self.buffer), dtype=torch.float64), self.clip_percentile / 100.0)
        return min(self.max_norm, float(q))

    def __call__(self, params) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(params, self.threshold())
        if hasattr(norm, "full_tensor"):
            norm = norm.full_tensor()
        if torch.isfinite(norm):
            self.buffer.append(float(norm))
        return norm

    def state_dict(self) -> dict:
        return {"buffer": torch.tensor(list(self.buffer), dtype=torch.float64)}

    def load_state_dict(self, st: dict) -> None:
        self.buffer = collections.deque(st["buffer"].tolist(), maxlen=self.history)


# ----------------------------------------------------------------------------------------------------------------
# base trainer
# ----------------------------------------------------------------------------------------------------------------
EXPORT_NAMES = {
    "ss_vae": {"encoder": "sparse_structure_encoder", "decoder": "sparse_structure_decoder"},
    "slat_vae": {"encoder": "slat_encoder", "decoder": "slat_decoder_gs"},
    "ss_flow": {"flow": "sparse_structure_flow_model", "conditioner": "image_cond_model"},
    "slat_flow": {"flow": "slat_flow_model", "conditioner": "image_cond_model"},
}


def _world():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class Trainer:
    """Shared optimisation machinery. Subclasses set `stage`, `roles` (model roles, trainable unless frozen),
    `frozen_roles` (helpers never trained), `loss_defaults`, `required_keys` and implement `compute_loss`.

    `models`: role -> module (all on `device`); `frozen`: role -> helper module; `trainable`: role -> bool
    (default True for every role in `roles`); `loss`: overrides of `loss_defaults`."""

    stage = ""
    roles: tuple[str, ...] = ()
    optional_roles: tuple[str, ...] = ()
    frozen_roles: tuple[str, ...] = ()
    loss_defaults: dict = {}
    required_keys: tuple[str, ...] = ()

    def __init__(self, models: dict[str, nn.Module], frozen: dict[str, nn.Module] | None = None,
                 trainable: dict[str, bool] | None = None, *, lr: float = 1e-4, weight_decay: float = 0.0,
                 betas=(0.9, 0.999), eps: float = 1e-8, ema_rate=0.9999, grad_clip=1.0, precision: str = "fp32",
                 seed: int = 0, loss: dict | None = None, device="cpu", fsdp: bool = False,
                 augment: dict | None = None):
        missing = [r for r in self.roles if r not in models]
        if missing:
            raise ConfigError(f"stage {self.stage!r} needs model role(s) {missing}")
        _check_keys(f"models of stage {self.stage!r}", models, self.roles + self.optional_roles)
        frozen = dict(frozen or {})
        _check_keys(f"frozen helpers of stage {self.stage!r}", frozen, self.frozen_roles)
        self.models = dict(models)
        self.frozen = frozen
        trainable = {r: True for r in self.models} | dict(trainable or {})
        self.trainable = {r: bool(trainable[r]) for r in self.models}
        if not any(self.trainable.values()):
            raise ConfigError("no trainable model")
        _check_keys(f"loss options of stage {self.stage!r}", loss or {}, self.loss_defaults)
        self.loss_cfg = {**self.loss_defaults, **(loss or {})}
        self.seed, self.device = int(seed), torch.device(device)
        if precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16, got {precision!r}")
        self.precision = precision
        self.augment = None
        if augment is not None and augment is not False:
            from .augment import VideoAugment  # lazy: keeps `python -m ss4d.train.augment` warning-free

            self.augment = VideoAugment({} if augment is True else augment)
        for r, m in self.models.items():
            m.to(self.device)
            m.train(self.trainable[r])
            m.requires_grad_(self.trainable[r])
        for m in self.frozen.values():
            m.to(self.device).eval().requires_grad_(False)
        self.fsdp = bool(fsdp)
        if self.fsdp:
            from .loop import wrap_fsdp  # only needed for sharded runs
            for r in self.models:
                if self.trainable[r]:
                    wrap_fsdp(self.models[r])
        self.params = [(f"{r}.{n}", p) for r in sorted(self.models) if self.trainable[r]
                       for n, p in self.models[r].named_parameters()]
        self.optimizer = torch.optim.AdamW([p for _, p in self.params], lr=lr, betas=tuple(betas), eps=eps,
                                           weight_decay=weight_decay)
        self._hparams = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        rates = ema_rate if isinstance(ema_rate, (list, tuple)) else ([] if ema_rate is None else [ema_rate])
        self.ema_rates = [float(r) for r in rates]
        self.ema = {str(rate): [p.detach().clone() for _, p in self.params] for rate in self.ema_rates}
        if isinstance(grad_clip, dict):
            _check_keys("grad_clip", grad_clip, ("max_norm", "clip_percentile", "history"))
            self.clipper = AdaptiveGradClipper(**grad_clip)
        elif grad_clip:
            self.clipper = AdaptiveGradClipper(float(grad_clip))
        else:
            self.clipper = None
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        self.step = 0

    # ------------------------------------------------------------------ helpers
    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dt = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dt)

    def generators(self, batch: dict, stream: int) -> list[torch.Generator]:
        return [clip_generator(self.seed, self.step, s, stream) for s in batch["slots"]]

    @staticmethod
    def num_clips(batch: dict) -> int:
        return int(batch["num_clips"])

    def check_batch(self, batch: dict) -> dict:
        missing = [k for k in ("num_frames",) + self.required_keys if k not in batch]
        if missing:
            raise TrainingError(f"stage {self.stage!r}: batch lacks {missing} (the data set must provide them)")
        T = int(batch["num_frames"])
        first = next(batch[k] for k in ("occupancy", "cond_frames", "views") if k in batch)
        if first.shape[0] % T:
            raise TrainingError(f"batch has {first.shape[0]} frames, not a multiple of num_frames={T}")
        batch = dict(batch)
        batch.setdefault("num_clips", first.shape[0] // T)
        batch.setdefault("slots", list(range(batch["num_clips"])))
        if len(batch["slots"]) != batch["num_clips"]:
            raise TrainingError("batch['slots'] must hold one entry per clip")
        return batch

    def to_device(self, batch: dict) -> dict:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # ------------------------------------------------------------------ one optimisation step
    def _allreduce_grads(self, world: int) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.params]
        for (_, p), g in zip(self.params, grads):
            p.grad = g
        bucket = 1 << 24
        i = 0
        while i < len(grads):
            j, size = i, 0
            while j < len(grads) and (size == 0 or size + grads[j].numel() <= bucket):
                size += grads[j].numel()
                j += 1
            flat = torch.cat([g.reshape(-1) for g in grads[i:j]])
            dist.all_reduce(flat)
            flat /= world
            off = 0
            for g in grads[i:j]:
                g.copy_(flat[off:off + g.numel()].view_as(g))
                off += g.numel()
            i = j

    def train_step(self, batch: dict) -> dict:
        """Forward, backward, (all-reduce), clip, AdamW, EMA. Returns float metrics (averaged over processes).
        Raises `NonFiniteLossError` before touching the weights when the loss is NaN/Inf."""
        batch = self.to_device(self.check_batch(batch))
        _, world = _world()
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, terms = self.compute_loss(batch)
        names = ["loss"] + sorted(terms)
        vec = torch.stack([loss.detach().float()] + [torch.as_tensor(terms[k]).detach().float().to(loss.device)
                                                     for k in sorted(terms)])
        if world > 1:
            dist.all_reduce(vec)
            vec /= world
        metrics = dict(zip(names, vec.tolist()))
        if not math.isfinite(metrics["loss"]):
            bad = {k: v for k, v in metrics.items()}
            raise NonFiniteLossError(f"stage {self.stage}: non-finite loss at step {self.step} ({bad}); "
                                     "stopping without writing a checkpoint")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        if world > 1 and not self.fsdp:
            self._allreduce_grads(world)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for _, p in self.params]
        if self.clipper is not None:
            gnorm = self.clipper(params)
        else:
            gnorm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            if hasattr(gnorm, "full_tensor"):
                gnorm = gnorm.full_tensor()
        gnorm = float(gnorm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if not math.isfinite(gnorm):
                raise NonFiniteLossError(f"stage {self.stage}: non-finite gradient norm at step {self.step}; "
                                         "stopping without writing a checkpoint")
            self.optimizer.step()
        self.update_ema()
        self.step += 1
        metrics["grad_norm"] = gnorm
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        return metrics

    @torch.no_grad()
    def update_ema(self) -> None:
        """EMA with warm-up: update n (0-based) uses min(rate, (1 + n) / (10 + n)), so a short run's EMA is not
        dominated by the random initial weights (0.999 ** 1000 = 37 % of them without the warm-up)."""
        n = self.step
        for rate in self.ema_rates:
            r = min(float(rate), (1.0 + n) / (10.0 + n))
            for e, (_, p) in zip(self.ema[str(rate)], self.params):
                e.mul_(r).add_(p.detach(), alpha=1 - r)

    # ------------------------------------------------------------------ state
    def model_state(self, role: str, ema_rate: float | None = None) -> dict[str, torch.Tensor]:
        """Full (unsharded, CPU) state dict of a model; with `ema_rate`, its EMA weights (buffers from the model)."""
        m = self.models[role]
        sd = {k: _full(v).detach().cpu().clone() for k, v in m.state_dict().items()}
        if ema_rate is not None and self.trainable[role]:
            for (name, _), e in zip(self.params, self.ema[str(ema_rate)]):
                r, k = name.split(".", 1)
                if r == role:
                    sd[k] = _full(e).detach().cpu().clone()
        return sd

    def state_dict(self) -> dict:
        st = {"step": self.step,
              "models": {r: self.model_state(r) for r in self.models if self.trainable[r]},
              "ema": {rate: {n: _full(e).detach().cpu().clone() for (n, _), e in zip(self.params, v)}
                      for rate, v in self.ema.items()},
              "optimizer": self._optimizer_state(),
              "clipper": self.clipper.state_dict() if self.clipper is not None else None,
              "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        return st

    def _optimizer_state(self) -> dict:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
            mods = [self.models[r] for r in sorted(self.models) if self.trainable[r]]
            return get_optimizer_state_dict(nn.ModuleList(mods), self.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return self.optimizer.state_dict()

    def load_state_dict(self, st: dict) -> None:
        for r, sd in st["models"].items():
            _load_full(self.models[r], sd)
        for rate, v in st["ema"].items():
            if rate not in self.ema:
                continue
            for (n, _), e in zip(self.params, self.ema[rate]):
                _copy_full(e, v[n])
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
            mods = [self.models[r] for r in sorted(self.models) if self.trainable[r]]
            set_optimizer_state_dict(nn.ModuleList(mods), self.optimizer, st["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(st["optimizer"])
        for g in self.optimizer.param_groups:  # the config's hyper-parameters win over the checkpoint's (an lr change
            g.update(self._hparams)            # on resume takes effect; the Adam moments are kept)
        if self.clipper is not None and st.get("clipper") is not None:
            self.clipper.load_state_dict(st["clipper"])
        if self.scaler is not None and st.get("scaler") is not None:
            self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])

    def export_state(self, raw: bool = False) -> dict[str, dict[str, torch.Tensor]]:
        """Role -> weights to publish for every trained model: its EMA weights (first rate), or the raw weights
        when no EMA is kept or `raw` is set. Collective under FSDP."""
        rate = self.ema_rates[0] if self.ema_rates and not raw else None
        return {r: self.model_state(r, rate) for r in self.models if self.trainable[r]}

    # ------------------------------------------------------------------ previews
    @torch.no_grad()
    def preview(self, batch: dict, out_dir, step: int) -> dict:
        """Small evaluation on `batch` written under `out_dir` (subclasses); returns summary numbers."""
        return {}

    # ------------------------------------------------------------------ conditioning (flow stages)
    def condition(self, batch: dict, T: int) -> torch.Tensor:
        frames = batch["cond_frames"]
        if self.augment is not None:
            frames = self.augment.apply_batch(frames, T, self.generators(batch, STREAM_AUG))
        cond_model = self.models["conditioner"]
        if self.trainable.get("conditioner", False):
            return cond_model(frames).float()
        with torch.no_grad():
            return cond_model(frames).float()


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _copy_full(dst: torch.Tensor, src: torch.Tensor) -> None:
    if hasattr(dst, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor
        src = distribute_tensor(src.to(dst.dtype), dst.device_mesh, dst.placements)
        dst.copy_(src)
    else:
        dst.copy_(src.to(dst.dtype))


def _load_full(model: nn.Module, sd: dict) -> None:
    own = model.state_dict()
    with torch.no_grad():
        for k, v in own.items():
            _copy_full(v, sd[k])


# ----------------------------------------------------------------------------------------------------------------
# per-clip helpers
# ----------------------------------------------------------------------------------------------------------------
def _clip_rows(coords: torch.Tensor, num_clips: int, T: int) -> list[slice]:
    """Row slice of every clip in coords sorted by batch index (b = clip * T + frame)."""
    counts = torch.bincount(coords[:, 0].long() // T, minlength=num_clips).tolist()
    out, s = [], 0
    for c in counts[:num_clips]:
        out.append(slice(s, s + c))
        s += c
    return out


def _posterior(mean: torch.Tensor, logvar: torch.Tensor, rows: list[slice], gens) -> torch.Tensor:
    eps = torch.cat([torch.randn(mean[sl].shape, generator=g) for sl, g in zip(rows, gens)]).to(mean)
    return mean + torch.exp(0.5 * logvar) * eps


# ----------------------------------------------------------------------------------------------------------------
class SSVAETrainer(Trainer):
    """Dense occupancy VAE: dice(sigmoid(logits), occupancy) + kl_weight * KL, per clip."""

    stage = "ss_vae"
    roles = ("encoder", "decoder")
    loss_defaults = {"kl_weight": 1e-3, "sample_posterior": True}
    required_keys = ("occupancy",)

    def compute_loss(self, batch):
        occ, T, B = batch["occupancy"], int(batch["num_frames"]), self.num_clips(batch)
        enc, dec = self.models["encoder"], self.models["decoder"]
        x = occ.to(torch.float32)[:, None]
        _, mean, logvar = enc(x, sample_posterior=False, return_raw=True)
        mean, logvar = mean.float(), logvar.float()
        rows = [slice(b * T, (b + 1) * T) for b in range(B)]
        z = _posterior(mean, logvar, rows, self.generators(batch, STREAM_MAIN)) \
            if self.loss_cfg["sample_posterior"] else mean
        logits = dec(z).float()
        dice = torch.stack([L.dice_loss(logits[sl], occ[sl]) for sl in rows]).mean()
        kl = torch.stack([L.kl_loss(mean[sl], logvar[sl]) for sl in rows]).mean()
        loss = dice + self.loss_cfg["kl_weight"] * kl
        return loss, {"dice": dice, "kl": kl}

    @torch.no_grad()
    def preview(self, batch, out_dir, step):
        batch = self.to_device(self.check_batch(batch))
        occ = batch["occupancy"]
        z = self.models["encoder"](occ.float()[:, None], sample_posterior=False)
        pred = self.models["decoder"](z)[:, 0] > 0
        inter = (pred & occ).sum().item()
        union = (pred | occ).sum().item()
        return {"iou": inter / max(union, 1)}


# ----------------------------------------------------------------------------------------------------------------
def voxel_color_l1(gaussians, x: SparseTensor) -> torch.Tensor:
    """Mean L1 between each voxel's mean Gaussian colour (its `num_gaussians` Gaussians, voxel-major) and the
    straight colour of its input features (premultiplied RGBA: RGB / A, A clamped at 0.05)."""
    if x.feats.shape[1] != 4:
        raise ConfigError(f"loss.color_weight needs RGBA voxel features (4 channels), got {x.feats.shape[1]}")
    target = (x.feats[:, :3].float() / x.feats[:, 3:4].float().clamp_min(0.05)).clamp(0, 1)
    errs = []
    for g, sl in zip(gaussians, x.layout):
        n = sl.stop - sl.start
        if n == 0:
            continue
        col = g.get_colors.float().reshape(n, -1, 3).mean(1)
        errs.append((col - target[sl]).abs().sum(0))
    return torch.stack(errs).sum(0).sum() / (3 * max(x.feats.shape[0], 1))


class SLatVAETrainer(Trainer):
    """4D structured-latent VAE with the Gaussian decoder: one random view per frame rendered with the ss4d
    rasterizer; L1 + ssim_weight (1 - SSIM) + lpips_weight LPIPS (if a hook is set) + kl_weight KL + the
    Gaussian regularisers; background randomly black or white per frame (TRELLIS). ``color_weight`` > 0 (an ss4d
    addition, off by default) adds an L1 between each voxel's mean Gaussian colour and its straight input colour
    (premultiplied RGBA features / alpha): a direct signal that makes the latents carry colour early in training."""

    stage = "slat_vae"
    roles = ("encoder", "decoder")
    loss_defaults = {"kl_weight": 1e-6, "ssim_weight": 0.2, "lpips_weight": 0.2, "volume_weight": 1e4,
                     "opacity_weight": 1e-3, "render_size": None, "background": "random", "sample_posterior": True,
                     "color_weight": 0.0}
    required_keys = ("coords", "feats", "views", "cameras")

    def __init__(self, *a, lpips=None, **kw):
        super().__init__(*a, **kw)
        self.lpips = lpips
        if self.loss_cfg["background"] not in ("random", "black", "white"):
            raise ConfigError("loss.background must be 'random', 'black' or 'white'")

    def _render_targets(self, batch, gaussians, T, B):
        views, cams = batch["views"], batch["cameras"]
        S = self.loss_cfg["render_size"] or views.shape[-1]
        preds, gts = [], []
        gens = self.generators(batch, STREAM_RENDER)
        for f, g in enumerate(gaussians):
            gen = gens[f // T]
            v = int(torch.randint(0, views.shape[1], (), generator=gen))
            mode = self.loss_cfg["background"]
            bgv = float(torch.randint(0, 2, (), generator=gen)) if mode == "random" else float(mode == "white")
            cam = cams[f][v]
            cam = cam.resized(S, S) if (cam.width, cam.height) != (S, S) else cam
            with torch.autocast(device_type=self.device.type, enabled=False):
                out = rasterize(g.to(dtype=torch.float32), cam.to(self.device), bg=(bgv, bgv, bgv))
            gt = views[f, v].float()
            if gt.shape[-1] != S:
                gt = torch.nn.functional.interpolate(gt[None], size=(S, S), mode="bilinear", antialias=True,
                                                     align_corners=False)[0]
            preds.append(out["color"])
            gts.append(gt[:3] * gt[3:4] + (1 - gt[3:4]) * bgv)
        return torch.stack(preds), torch.stack(gts)

    def compute_loss(self, batch):
        T, B = int(batch["num_frames"]), self.num_clips(batch)
        enc, dec = self.models["encoder"], self.models["decoder"]
        _check_feats(enc, batch["feats"])
        x = SparseTensor(batch["feats"].float(), batch["coords"], B * T)
        _, mean, logvar = enc(x, num_frames=T, sample_posterior=False, return_raw=True)
        mean, logvar = mean.float(), logvar.float()
        rows = _clip_rows(x.coords, B, T)
        z = _posterior(mean, logvar, rows, self.generators(batch, STREAM_MAIN)) \
            if self.loss_cfg["sample_posterior"] else mean
        gaussians = dec(x.replace(z), num_frames=T)
        pred, gt = self._render_targets(batch, gaussians, T, B)
        c = self.loss_cfg
        l1, ss, lp, kl, vol, opa = [], [], [], [], [], []
        for b in range(B):
            fr = slice(b * T, (b + 1) * T)
            l1.append(L.l1_loss(pred[fr], gt[fr]))
            ss.append(1 - L.ssim(pred[fr], gt[fr]))
            lv = L.lpips_loss(self.lpips, pred[fr], gt[fr])
            if lv is not None:
                lp.append(lv)
            kl.append(L.kl_loss(mean[rows[b]], logvar[rows[b]]))
            reg = L.gaussian_regularizers(gaussians[fr], c["volume_weight"], c["opacity_weight"])
            vol.append(reg["reg_volume"])
            opa.append(reg["reg_opacity"])
        terms = {"l1": torch.stack(l1).mean(), "ssim": 1 - torch.stack(ss).mean(), "kl": torch.stack(kl).mean(),
                 "reg_volume": torch.stack(vol).mean(), "reg_opacity": torch.stack(opa).mean()}
        loss = terms["l1"] + c["ssim_weight"] * (1 - terms["ssim"]) + c["kl_weight"] * terms["kl"] \
            + terms["reg_volume"] + terms["reg_opacity"]
        if lp:
            terms["lpips"] = torch.stack(lp).mean()
            loss = loss + c["lpips_weight"] * terms["lpips"]
        if c["color_weight"]:
            terms["color"] = voxel_color_l1(gaussians, x)
            loss = loss + c["color_weight"] * terms["color"]
        terms["psnr"] = torch.tensor(L.psnr(pred.detach(), gt))
        return loss, terms

    @torch.no_grad()
    def preview(self, batch, out_dir, step):
        from pathlib import Path

        batch = self.to_device(self.check_batch(batch))
        T, B = int(batch["num_frames"]), self.num_clips(batch)
        x = SparseTensor(batch["feats"].float(), batch["coords"], B * T)
        z = self.models["encoder"](x, num_frames=T, sample_posterior=False)
        gaussians = self.models["decoder"](z, num_frames=T)
        pred, gt = self._render_targets(batch, gaussians, T, B)
        try:
            from PIL import Image
            img = torch.cat([torch.cat(list(pred[:T]), 2), torch.cat(list(gt[:T]), 2)], 1)
            arr = (img.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(Path(out_dir) / f"recon_{step:08d}.png")
        except ImportError:
            pass
        return {"psnr": L.psnr(pred, gt)}


# ----------------------------------------------------------------------------------------------------------------
_FLOW_DEFAULTS = {"p_uncond": 0.1, "t_mean": 1.0, "t_std": 1.0, "t_dist": "logit_normal",
                  "sigma_min": fm.SIGMA_MIN, "preview_steps": 8, "preview_cfg": 0.0}


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
        flow = self.models["flow"]
        was = flow.training
        flow.eval()
        c = self.loss_cfg
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(self.seed)).to(x0)

        def fn(x, tt, uncond):
            cc = torch.zeros_like(cond) if uncond else cond
            return flow(x, torch.full((T,), 1000.0 * tt, device=x.device), cc, num_frames=T).float()

        z = fm.euler_sample(fn, noise, c["preview_steps"], cfg_strength=c["preview_cfg"], sigma_min=c["sigma_min"])
        flow.train(was)
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
        c = self.models["flow"].in_channels
        self.slat_mean = torch.tensor(n.get("mean", [0.0] * c), dtype=torch.float32, device=self.device)
        self.slat_std = torch.tensor(n.get("std", [1.0] * c), dtype=torch.float32, device=self.device)
        if self.slat_mean.numel() != c or self.slat_std.numel() != c or (self.slat_std <= 0).any():
            raise ConfigError(f"slat normalization needs {c} means and {c} positive stds")

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
        pred = self.models["flow"](xs, fm.model_time(t, T).to(x0.device), cond, num_frames=T).feats.float()
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
        flow = self.models["flow"]
        was = flow.training
        flow.eval()
        c = self.loss_cfg
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(self.seed)).to(x0)
        x = SparseTensor(noise, coords[keep], T)

        def fn(xx, tt, uncond):
            cc = torch.zeros_like(cond) if uncond else cond
            return flow(xx, torch.full((T,), 1000.0 * tt, device=noise.device), cc, num_frames=T)

        z = fm.euler_sample(fn, x, c["preview_steps"], cfg_strength=c["preview_cfg"], sigma_min=c["sigma_min"])
        flow.train(was)
        return {"latent_mse": float((z.feats - x0).square().mean()), "sample_std": float(z.feats.std())}


TRAINERS = {t.stage: t for t in (SSVAETrainer, SLatVAETrainer, SSFlowTrainer, SLatFlowTrainer)}
