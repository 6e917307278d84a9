"""Image encoders used to condition the generative models (DINOv2 for SS4D; EfficientNet-Lite0 as a small one)."""
from .dinov2 import (
    DinoV2,
    DinoV2Conditioner,
    load_dinov2_weights,
    vit_base,
    vit_giant2,
    vit_large,
    vit_small,
)
from .efficientnet import EfficientNetLite, EfficientNetLiteConditioner, load_efficientnet_lite_weights

__all__ = [
    "DinoV2",
    "DinoV2Conditioner",
    "load_dinov2_weights",
    "vit_small",
    "vit_base",
    "vit_large",
    "vit_giant2",
    "EfficientNetLite",
    "EfficientNetLiteConditioner",
    "load_efficientnet_lite_weights",
]
