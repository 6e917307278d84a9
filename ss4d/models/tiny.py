"""The tiny SS4D configuration (CPU-sized): 32^3 voxels, 8^3 structure latents, 128-wide transformers.

Used by the shipped default model, the tests (random weights) and `configs/tiny/`. `write_model_folder` writes an
official-layout pipeline folder (`pipeline.json` + `ckpts/`) from a dict of models.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import atomic_write, save_model
from .registry import build

TINY = {
    "image_cond_model": ("PatchImageEncoder", {"image_size": 128, "patch_size": 16, "channels": 128,
                                               "num_blocks": 2, "num_heads": 4, "mlp_ratio": 2.0}),
    "sparse_structure_encoder": ("SparseStructureEncoder", {
        "in_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "channels": [16, 32, 64],
        "num_res_blocks_middle": 1, "norm_type": "layer"}),
    "sparse_structure_decoder": ("SparseStructureDecoder", {
        "out_channels": 1, "latent_channels": 8, "num_res_blocks": 1, "channels": [64, 32, 16],
        "num_res_blocks_middle": 1, "norm_type": "layer"}),
    "sparse_structure_flow_model": ("SparseStructureFlow4DModel", {
        "resolution": 8, "in_channels": 8, "out_channels": 8, "model_channels": 128, "cond_channels": 128,
        "num_blocks": 4, "num_heads": 4, "mlp_ratio": 4, "patch_size": 2, "pe_mode": "rope_t",
        "qk_rms_norm": True, "expand_self_attn": True, "window_size": 8}),
    "slat_encoder": ("SLatEncoder", {
        "resolution": 32, "in_channels": 32, "model_channels": 128, "latent_channels": 8, "num_blocks": 4,
        "num_heads": 4, "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "pe_mode": "rope_t",
        "expand_self_attn": True}),
    "slat_readout": ("LatentReadout", {"latent_channels": 8, "out_channels": 4}),
    "slat_decoder_gs": ("SLatGaussianDecoder", {
        "resolution": 32, "model_channels": 128, "latent_channels": 8, "num_blocks": 4, "num_heads": 4,
        "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "pe_mode": "rope_t", "expand_self_attn": True,
        "representation_config": {"lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0,
                                         "_rotation": 0.1}, "perturb_offset": True, "voxel_size": 1.5,
                                  "num_gaussians": 8, "2d_filter_kernel_size": 0.1,
                                  "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1,
                                  "scaling_activation": "softplus"}}),
    "slat_flow_model": ("SLatFlow4DModel", {
        "resolution": 32, "in_channels": 8, "out_channels": 8, "model_channels": 128, "cond_channels": 128,
        "num_blocks": 4, "num_heads": 4, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
        "num_io_res4d_blocks": 2, "io_block_channels": [32], "io_block_channels_t": [128], "pe_mode": "rope_t",
        "qk_rms_norm": True, "expand_self_attn": True, "conv_type": "3D_1D"}),
}

SAMPLER = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
           "params": {"steps": 12, "cfg_strength": 3.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}


def build_tiny(seed: int = 0, names=None, occupancy_bias: float | None = -0.6) -> dict[str, torch.nn.Module]:
    """Randomly initialised tiny models. `occupancy_bias` shifts the random structure decoder's logits so a
    random pipeline yields a few percent occupied voxels (plumbing tests) instead of half the grid."""
    torch.manual_seed(seed)
    out = {}
    for k, (name, args) in TINY.items():
        if names is not None and k not in names:
            continue
        out[k] = build(name, args)
    if occupancy_bias is not None and "sparse_structure_decoder" in out:
        with torch.no_grad():
            out["sparse_structure_decoder"].out_layer[-1].bias.fill_(occupancy_bias)
    return out


def write_model_folder(folder, models: dict[str, torch.nn.Module], slat_mean=None, slat_std=None,
                       num_frames: int = 32, sampler: dict | None = None, dtype=None, extra: dict | None = None,
                       args: dict[str, dict] | None = None):
    """Write `pipeline.json` + `ckpts/<name>.{json,safetensors}` (official layout). `args`: per model key, overrides
    of its tiny arguments (e.g. `{"slat_flow_model": {"in_channels": 13}}` for a pixel-aligned latent flow)."""
    folder = Path(folder)
    (folder / "ckpts").mkdir(parents=True, exist_ok=True)
    for k, m in models.items():
        name, margs = TINY[k] if k in TINY else (type(m).__name__, {})
        margs = {**margs, **(args or {}).get(k, {})}
        save_model(m, name, margs, folder / "ckpts" / k, dtype=dtype)
    sampler = sampler or SAMPLER
    cfg = {"name": "SS4DVideoTo4DPipeline", "args": {
        "models": {k: f"ckpts/{k}" for k in models if k != "image_cond_model"},
        "sparse_structure_sampler": sampler, "slat_sampler": sampler,
        "slat_normalization": {"mean": list(slat_mean or [0.0] * 8), "std": list(slat_std or [1.0] * 8)},
        "image_cond_model": {"name": TINY["image_cond_model"][0], "args": TINY["image_cond_model"][1],
                             "ckpt": "ckpts/image_cond_model"},
        "num_frames": num_frames, **(extra or {})}}
    atomic_write(folder / "pipeline.json", lambda t: Path(t).write_text(json.dumps(cfg, indent=2)))
    return folder
