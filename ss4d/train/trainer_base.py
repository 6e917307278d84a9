"""The stage-independent trainer: optimiser, EMA, clipping, precision, data parallelism, NaN guard, exact resume."""
from __future__ import annotations

import collections
import contextlib
import hashlib
import math

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InputError

STREAM_MAIN, STREAM_AUG, STREAM_RENDER = 0, 1, 2


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


def clip_generator(seed: int, step: int, slot: int, stream: int = STREAM_MAIN) -> torch.Generator:
    """CPU generator of the random stream `stream` of global-batch slot `slot` at `step`."""
    h = hashlib.blake2b(f"{seed}/{step}/{slot}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(h, "little") & ((1 << 63) - 1))


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


EXPORT_NAMES = {
    "ss_vae": {"encoder": "sparse_structure_encoder", "decoder": "sparse_structure_decoder"},
    "slat_vae": {"encoder": "slat_encoder", "decoder": "slat_decoder_gs"},
    "slat_encoder": {"encoder": "slat_encoder", "readout": "slat_readout"},
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
