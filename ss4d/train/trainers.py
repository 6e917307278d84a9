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

from .flow_trainers import SLatFlowTrainer, SSFlowTrainer
from .latents import encode_slat, encode_ss_latents, slat_normalization_stats
from .trainer_base import (
    EXPORT_NAMES,
    STREAM_AUG,
    STREAM_MAIN,
    STREAM_RENDER,
    AdaptiveGradClipper,
    ConfigError,
    NonFiniteLossError,
    Trainer,
    TrainingError,
    clip_generator,
)
from .vae_trainers import SLatEncoderTrainer, SLatVAETrainer, SSVAETrainer, voxel_color_l1, voxel_targets

__all__ = ["TrainingError", "NonFiniteLossError", "ConfigError", "clip_generator", "Trainer", "SSVAETrainer",
           "SLatVAETrainer", "SLatEncoderTrainer", "SSFlowTrainer", "SLatFlowTrainer", "TRAINERS",
           "encode_ss_latents", "encode_slat", "slat_normalization_stats", "AdaptiveGradClipper", "EXPORT_NAMES",
           "voxel_color_l1", "voxel_targets", "STREAM_MAIN", "STREAM_AUG", "STREAM_RENDER"]


TRAINERS = {t.stage: t for t in (SSVAETrainer, SLatEncoderTrainer, SLatVAETrainer, SSFlowTrainer,
                                  SLatFlowTrainer)}
