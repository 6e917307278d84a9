"""Build models from the official `{"name": ..., "args": {...}}` descriptions.

Official class names map to ss4d classes (one class per concept; the 4D names only change defaults).
"""
from __future__ import annotations

import importlib
from typing import Any

# official name -> (module, class, default args applied before the given args)
_REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "SparseStructureFlowModel": ("ss4d.models.ss_flow", "SparseStructureFlowModel", {}),
    "SparseStructureFlow4DModel": ("ss4d.models.ss_flow", "SparseStructureFlowModel",
                                   {"pe_mode": "rope_t", "expand_self_attn": True}),
    "SLatFlowModel": ("ss4d.models.slat_flow", "SLatFlowModel", {"conv_type": "3D"}),
    "ElasticSLatFlowModel": ("ss4d.models.slat_flow", "SLatFlowModel", {"conv_type": "3D"}),
    "SLatFlow4DModel": ("ss4d.models.slat_flow", "SLatFlowModel",
                        {"conv_type": "3D_1D", "pe_mode": "rope_t", "expand_self_attn": True}),
    "ElasticSLatFlow4DModel": ("ss4d.models.slat_flow", "SLatFlowModel",
                               {"conv_type": "3D_1D", "pe_mode": "rope_t", "expand_self_attn": True}),
    "SLatEncoder": ("ss4d.models.slat_vae", "SLatEncoder", {}),
    "ElasticSLatEncoder": ("ss4d.models.slat_vae", "SLatEncoder", {}),
    "SLatGaussianDecoder": ("ss4d.models.slat_vae", "SLatGaussianDecoder", {}),
    "LatentReadout": ("ss4d.models.slat_vae", "LatentReadout", {}),
    "ElasticSLatGaussianDecoder": ("ss4d.models.slat_vae", "SLatGaussianDecoder", {}),
    "SparseStructureEncoder": ("ss4d.models.ss_vae", "SparseStructureEncoder", {}),
    "SparseStructureDecoder": ("ss4d.models.ss_vae", "SparseStructureDecoder", {}),
    "vit_small": ("ss4d.models.image_encoders.dinov2", "vit_small", {}),
    "vit_base": ("ss4d.models.image_encoders.dinov2", "vit_base", {}),
    "vit_large": ("ss4d.models.image_encoders.dinov2", "vit_large", {}),
    "vit_giant2": ("ss4d.models.image_encoders.dinov2", "vit_giant2", {}),
    "PatchImageEncoder": ("ss4d.models.image_encoders.patch_encoder", "PatchImageEncoder", {}),
    "EfficientNetLiteConditioner": ("ss4d.models.image_encoders.efficientnet", "EfficientNetLiteConditioner", {}),
    "DinoV2Conditioner": ("ss4d.models.image_encoders.dinov2", "DinoV2Conditioner", {}),
    "DinoVisionTransformer": ("ss4d.models.image_encoders.dinov2", "DinoV2", {}),
}


class UnknownModelError(ValueError):
    pass


def known_models() -> list[str]:
    return sorted(_REGISTRY)


def resolve(name: str):
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model name {name!r}; known: {', '.join(known_models())}")
    mod, cls, defaults = _REGISTRY[name]
    return getattr(importlib.import_module(mod), cls), dict(defaults)


def build(name: str | dict, args: dict | None = None):
    """`build("SLatFlow4DModel", {...})` or `build({"name": ..., "args": {...}})`."""
    if isinstance(name, dict):
        if "name" not in name:
            raise ValueError("model description needs a 'name'")
        args, name = name.get("args", {}), name["name"]
    factory, kw = resolve(name)
    kw.update(args or {})
    try:
        return factory(**kw)
    except TypeError as e:
        raise ValueError(f"cannot build {name}: {e}") from None
