"""The official pipeline folder: `pipeline.json` + `<path>.{json,safetensors}` per model, paths as `models` names them
(usually `ckpts/<stem>`; spec §1.1).

ss4d reads the official SS4D/TRELLIS layout unchanged and adds one optional field: `image_cond_model` may be a
`{"name", "args", "ckpt"}` description of a bundled conditioning encoder instead of a DINOv2 hub name. A hub name is
served by a copy shipped in the folder (`image_cond_model.{json,safetensors}`) or by the user's weight file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models.checkpoint import CheckpointError, load_model, read_json

REQUIRED_MODELS = ("sparse_structure_flow_model", "sparse_structure_decoder", "slat_flow_model", "slat_decoder_gs")
DINO_NAMES = ("dinov2_vitl14_reg", "dinov2_vitl14_reg4")


def default_model_dir() -> Path:
    """The small model shipped inside the package."""
    return Path(__file__).resolve().parents[1] / "assets" / "default_model"


@dataclass
class PipelineConfig:
    root: Path
    models: dict[str, str]
    ss_sampler: dict
    slat_sampler: dict
    slat_mean: list[float] | None
    slat_std: list[float] | None
    image_cond: str | dict
    num_frames: int = 32
    extra: dict = field(default_factory=dict)


def read_pipeline_config(path: str | os.PathLike) -> PipelineConfig:
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"model folder not found: {root}")
    f = root / "pipeline.json" if root.is_dir() else root
    cfg = read_json(f, f"{root} has no pipeline.json")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{f} must hold a JSON object")
    args = cfg.get("args", cfg)
    models = args.get("models", {})
    missing = [m for m in REQUIRED_MODELS if m not in models]
    if missing:
        raise CheckpointError(f"{f}: 'models' lacks {', '.join(missing)}")
    norm = args.get("slat_normalization") or {}
    return PipelineConfig(
        root=f.parent, models=dict(models),
        ss_sampler=args.get("sparse_structure_sampler", {"name": "FlowEulerGuidanceIntervalSampler",
                                                         "args": {"sigma_min": 1e-5}, "params": {}}),
        slat_sampler=args.get("slat_sampler", {"name": "FlowEulerGuidanceIntervalSampler",
                                               "args": {"sigma_min": 1e-5}, "params": {}}),
        slat_mean=norm.get("mean"), slat_std=norm.get("std"),
        image_cond=args.get("image_cond_model", "dinov2_vitl14_reg"),
        num_frames=int(args.get("num_frames", 32)), extra={k: v for k, v in args.items() if k not in (
            "models", "sparse_structure_sampler", "slat_sampler", "slat_normalization", "image_cond_model",
            "num_frames")})


def load_pipeline_models(cfg: PipelineConfig, device="cpu", dtype=torch.float32) -> dict[str, torch.nn.Module]:
    return {k: load_model(cfg.root / v, device, dtype) for k, v in cfg.models.items() if k in REQUIRED_MODELS}


def local_image_cond_stem(cfg: PipelineConfig) -> Path | None:
    """A copy of the hub image encoder shipped in the folder itself: `image_cond_model.{json,safetensors}` beside
    the other checkpoints (`ckpts/` or wherever `models` points), as the official test folders carry it."""
    dirs = dict.fromkeys([(cfg.root / v).parent for v in cfg.models.values()] + [cfg.root / "ckpts"])
    for d in dirs:
        stem = d / "image_cond_model"
        if Path(str(stem) + ".json").is_file() and Path(str(stem) + ".safetensors").is_file():
            return stem
    return None


def _as_conditioner(model: torch.nn.Module) -> torch.nn.Module:
    """A bare DINOv2 ViT becomes the SS4D conditioner (518 px, ImageNet normalisation, layer-normed x_prenorm)."""
    from ..models.image_encoders.dinov2 import DinoV2, DinoV2Conditioner

    if isinstance(model, DinoV2):
        return DinoV2Conditioner(model=model, image_size=518).eval()
    return model


def load_image_cond(cfg: PipelineConfig, device="cpu", dinov2_weights: str | None = None):
    """The conditioning encoder, or {flow model name: encoder} when each flow has its own.

    A hub name (official layout) is resolved in this order: `dinov2_weights` (a user's .pth / .safetensors), a copy
    shipped in the folder (:func:`local_image_cond_stem`), `$SS4D_DINOV2_WEIGHTS`."""
    ic = cfg.image_cond
    if isinstance(ic, dict) and "ckpts" in ic:
        # one conditioner per flow (each flow was trained with its own encoder)
        return {stage: load_model(cfg.root / stem, device, torch.float32) for stage, stem in ic["ckpts"].items()}
    if isinstance(ic, dict):
        return load_model(cfg.root / ic["ckpt"], device, torch.float32)
    if not isinstance(ic, str):
        raise CheckpointError(f"pipeline.json: image_cond_model must be a name or an object, got {ic!r}")
    local = local_image_cond_stem(cfg)
    is_dino = ic in DINO_NAMES or ic.startswith("dinov2")
    if local is not None and not (is_dino and dinov2_weights):
        return _as_conditioner(load_model(local, device, torch.float32)).to(device)
    if is_dino:
        from ..models.image_encoders.dinov2 import DinoV2Conditioner

        weights = dinov2_weights or os.environ.get("SS4D_DINOV2_WEIGHTS")
        if not weights:
            raise CheckpointError(
                f"this model conditions on {ic}, whose weights cannot be downloaded here: pass --dinov2-weights "
                "PATH (dinov2_vitl14_reg4_pretrain.pth) or set SS4D_DINOV2_WEIGHTS")
        return DinoV2Conditioner(weights=weights).to(device).eval()
    raise CheckpointError(f"unknown image_cond_model {ic!r} and no image_cond_model.json/.safetensors in "
                          f"{cfg.root}")
