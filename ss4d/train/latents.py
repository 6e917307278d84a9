"""Latents of the frozen encoders for the flow stages: sparse-structure latents, SLat latents and their statistics."""
from __future__ import annotations

import torch
from torch import nn

from ..sparse.tensor import SparseTensor
from .trainer_base import (
    TrainingError,
)


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


@torch.no_grad()
def fold_latent_mean(decoder: nn.Module, latent_mean, latent_std=0.0) -> nn.Module:
    """Re-base a SLat decoder onto new latents ``z_new`` related to the old ones by ``z_old = mean + std * z_new``
    (per channel): the input layer's response to ``mean`` moves into its bias and its latent weights are scaled by
    ``std``, so the decoder computes exactly what it did. ``std = 0`` (default) is the re-start of a decoder trained
    on (near-)constant latents: it renders as before for any input, its latent weights start at zero and it learns
    from scratch how to use the new latents (in place; returns the decoder)."""
    layer = decoder.input_layer
    C = layer.weight.shape[1]
    mean = torch.as_tensor(latent_mean, dtype=layer.weight.dtype, device=layer.weight.device).reshape(-1)
    std = torch.as_tensor(latent_std, dtype=layer.weight.dtype, device=layer.weight.device).reshape(-1)
    if mean.numel() != C or std.numel() not in (1, C):
        raise ValueError(f"latent mean of shape {tuple(mean.shape)} / std {tuple(std.shape)} for an input layer "
                         f"taking {C}")
    layer.bias += layer.weight @ mean
    layer.weight *= std.expand(C)[None]
    return decoder


@torch.no_grad()
def standardize_encoder(encoder: nn.Module, mean, std) -> nn.Module:
    """Re-parametrise a SLat encoder so its latent means come out standardised, ``(z - mean) / std`` per channel
    (its output layer's mean rows scaled and shifted; the log-variance rows shift by ``-2 log std``). The latents
    carry exactly the same information; a decoder trained on them sees unit-scale inputs, so it learns to use them
    as fast as it learns anything else (in place; returns the encoder)."""
    layer = encoder.out_layer
    C = layer.out_features // 2
    mean = torch.as_tensor(mean, dtype=layer.weight.dtype, device=layer.weight.device).reshape(-1)
    std = torch.as_tensor(std, dtype=layer.weight.dtype, device=layer.weight.device).reshape(-1)
    if mean.numel() != C or std.numel() != C or bool((std <= 0).any()):
        raise ValueError(f"standardize_encoder needs {C} means and {C} positive stds")
    layer.weight[:C] /= std[:, None]
    layer.bias[:C] = (layer.bias[:C] - mean) / std
    layer.bias[C:] -= 2 * torch.log(std)
    return encoder
