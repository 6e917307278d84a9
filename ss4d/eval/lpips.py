"""LPIPS (Zhang et al. 2018, v0.1) with a VGG16 or AlexNet trunk, implemented here; loads the user's public files.

Weights (none are downloaded; without them the metric reports *not computed*):

* trunk: the torchvision ImageNet state dict, key layout ``features.{i}.weight`` / ``features.{i}.bias``
  (``vgg16-397923af.pth`` for VGG16; ``alexnet-owt-7be5be79.pth`` or the older ``alexnet-owt-4df8aa71.pth`` for
  AlexNet). The ``classifier.*`` keys are ignored; every ``features.*`` key must be present with its shape.
* linear heads: the lpips package's ``lpips/weights/v0.1/vgg.pth`` (or ``alex.pth``), keys
  ``lin{k}.model.1.weight`` of shape ``[1, C_k, 1, 1]``, k = 0..4.

Computation (``lpips.LPIPS(net=..., version="0.1")`` with ``normalize=True``): images in ``[0, 1]`` -> ``2x - 1``
-> scaling layer ``(x - shift) / scale`` (shift ``(-.030, -.088, -.188)``, scale ``(.458, .448, .450)``) -> trunk
features at 5 ReLU taps (VGG16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 = ``features[3, 8, 15, 22, 29]``;
AlexNet: relu1..relu5 = ``features[1, 4, 7, 9, 11]``) -> unit-normalise over channels ``f / (|f| + 1e-10)`` ->
squared difference -> 1x1 conv (lin head, no bias) -> spatial mean -> sum over the 5 layers. Output ``[...]``
per image pair for inputs ``[..., 3, H, W]`` (the lpips package gives ``[N, 1, 1, 1]``).
"""
from __future__ import annotations

import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import MetricResult, read_weight_file

__all__ = [
    "LPIPS",
    "LPIPSMetric",
    "VGG16_CFG",
    "ALEXNET_CFG",
    "make_trunk",
    "load_lpips",
    "try_load_lpips",
    "LPIPS_SHIFT",
    "LPIPS_SCALE",
]

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# torchvision `features` Sequential: ints = conv out channels (3x3, pad 1, + ReLU -> two entries), "M" = 2x2 max pool
VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# AlexNet (torchvision): (out, kernel, stride, pad) convs + ReLU, "M" = 3x3/2 max pool
ALEXNET_CFG = ((64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1))

_TAPS = {"vgg": (3, 8, 15, 22, 29), "alex": (1, 4, 7, 9, 11)}
_CHANNELS = {"vgg": (64, 128, 256, 512, 512), "alex": (64, 192, 384, 256, 256)}


def _norm_net(net: str) -> str:
    n = net.lower()
    if n in ("vgg", "vgg16"):
        return "vgg"
    if n in ("alex", "alexnet"):
        return "alex"
    raise ValueError(f"LPIPS: unknown trunk {net!r} (use 'vgg' or 'alex')")


def make_trunk(net: str = "vgg") -> nn.Sequential:
    """The torchvision ``features`` Sequential up to the last LPIPS tap (indices identical to torchvision's, so
    ``features.{i}.weight`` keys match ``vgg16-397923af.pth`` / ``alexnet-owt-*.pth``)."""
    net = _norm_net(net)
    layers: list[nn.Module] = []
    cin = 3
    if net == "vgg":
        for v in VGG16_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
                cin = v
    else:
        for v in ALEXNET_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(3, 2))
            else:
                cout, k, s, p = v
                layers += [nn.Conv2d(cin, cout, k, stride=s, padding=p), nn.ReLU(inplace=False)]
                cin = cout
    assert len(layers) == _TAPS[net][-1] + 1
    return nn.Sequential(*layers)


class _LinHead(nn.Module):
    """lpips ``NetLinLayer``: ``model = Sequential(Dropout(), Conv2d(C, 1, 1, bias=False))``, key ``model.1.weight``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.model[1].weight)  # dropout is a no-op at evaluation


class LPIPS(nn.Module):
    """LPIPS distance. ``forward(x, y)``: images ``[..., 3, H, W]`` in ``[0, 1]`` -> ``[...]``.

    ``state_dict`` keys: ``features.{i}.{weight,bias}`` (trunk, torchvision layout) and ``lin{k}.model.1.weight``
    (heads, lpips layout); the scaling constants are non-persistent buffers. Runs in eval mode, frozen."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        self.net = _norm_net(net)
        self.features = make_trunk(self.net)
        self.taps = _TAPS[self.net]
        self.channels = _CHANNELS[self.net]
        for k, c in enumerate(self.channels):
            setattr(self, f"lin{k}", _LinHead(c))
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always evaluation mode (dropout off)
        return super().train(False)

    def trunk_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations at the 5 taps for scaled input ``[N, 3, H, W]``."""
        feats = []
        last = self.taps[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                feats.append(x)
            if i == last:
                break
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor, per_layer: bool = False):
        if x.shape != y.shape:
            raise ValueError(f"LPIPS: shape mismatch {tuple(x.shape)} vs {tuple(y.shape)}")
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"LPIPS: expected RGB images [..., 3, H, W], got {tuple(x.shape)}")
        lead = x.shape[:-3]
        dt = self.shift.dtype
        x = x.reshape(-1, *x.shape[-3:]).to(dt)
        y = y.reshape(-1, *y.shape[-3:]).to(dt)
        n = x.shape[0]
        z = torch.cat([x, y], 0) * 2.0 - 1.0
        z = (z - self.shift) / self.scale
        layers = []
        for k, f in enumerate(self.trunk_features(z)):
            f = f / (torch.sqrt(f.square().sum(dim=1, keepdim=True)) + 1e-10)
            d = (f[:n] - f[n:]).square()
            layers.append(getattr(self, f"lin{k}")(d).mean(dim=(-3, -2, -1)))
        total = torch.stack(layers, 0).sum(0).reshape(lead)
        if per_layer:
            return total, [v.reshape(lead) for v in layers]
        return total


def _split_lpips_state(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in ("module.", "net.", "model."):
            if k.startswith(p) and (k[len(p):].startswith("features.") or k[len(p):].startswith("lin")):
                k = k[len(p):]
        out[k] = v
    return out


def load_lpips(net_weights: str | os.PathLike, lin_weights: str | os.PathLike, net: str = "vgg",
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> LPIPS:
    """Build :class:`LPIPS` and load the torchvision trunk file and the lpips heads file (both ``torch.load``
    ``weights_only=True`` or ``.safetensors``). Strict: every trunk ``features.*`` key and every ``lin{k}`` key must
    be present with the right shape (extra keys such as ``classifier.*`` are ignored); raises ``RuntimeError``
    naming the file and the keys otherwise."""
    model = LPIPS(net)
    name = {"vgg": "VGG16", "alex": "AlexNet"}[model.net]
    want = model.state_dict()
    trunk = _split_lpips_state(read_weight_file(net_weights, f"LPIPS {name} trunk"))
    heads = _split_lpips_state(read_weight_file(lin_weights, f"LPIPS {name} linear heads"))
    sd = {}
    for src, path, prefix in ((trunk, net_weights, "features."), (heads, lin_weights, "lin")):
        keys = [k for k in want if k.startswith(prefix)]
        missing = [k for k in keys if k not in src]
        if missing:
            layout = "torchvision features.{i}" if prefix == "features." else "lpips lin{k}.model.1"
            raise RuntimeError(f"LPIPS {name}: {os.fspath(path)} lacks {len(missing)} expected keys, e.g. "
                               f"{missing[:6]} (expected the {layout} key layout)")
        bad = [f"{k}: {tuple(src[k].shape)} != {tuple(want[k].shape)}" for k in keys if src[k].shape != want[k].shape]
        if bad:
            raise RuntimeError(f"LPIPS {name}: {os.fspath(path)} has wrong shapes: {bad[:6]}")
        sd.update({k: src[k].float() for k in keys})
    model.load_state_dict(sd, strict=True)
    return model.to(device=device, dtype=dtype)


def try_load_lpips(net_weights, lin_weights, net: str = "vgg", device="cpu") -> tuple[LPIPS | None, str | None]:
    """:func:`load_lpips` or ``(None, reason)`` when a path is not given, missing or unreadable."""
    netn = _norm_net(net)
    trunk_name = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}[netn]
    if net_weights is None:
        return None, f"no {netn} trunk weights given (torchvision {trunk_name})"
    if lin_weights is None:
        return None, f"no LPIPS linear-head weights given (lpips package weights/v0.1/{netn}.pth)"
    try:
        return load_lpips(net_weights, lin_weights, netn, device=device), None
    except (FileNotFoundError, RuntimeError) as e:
        return None, str(e)


class LPIPSMetric:
    """LPIPS that degrades to *not computed*: ``value, reason = LPIPSMetric(trunk, heads)(pred, gt)``.

    ``pred``/``gt``: ``[..., 3, H, W]`` in ``[0, 1]`` (white-composited); the value is a float64 tensor ``[...]``
    (one distance per image pair) or ``None`` with the reason."""

    def __init__(self, net_weights=None, lin_weights=None, net: str = "vgg", device="cpu", batch_size: int = 8):
        self.net = _norm_net(net)
        self.model, self.reason = try_load_lpips(net_weights, lin_weights, self.net, device=device)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)

    @property
    def available(self) -> bool:
        return self.model is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> MetricResult:
        if self.model is None:
            return MetricResult.not_computed(f"LPIPS ({self.net}): {self.reason}")
        if pred.shape != gt.shape:
            raise ValueError(f"LPIPS: shape mismatch {tuple(pred.shape)} vs {tuple(gt.shape)}")
        lead = pred.shape[:-3]
        p = pred.reshape(-1, *pred.shape[-3:])
        g = gt.reshape(-1, *gt.shape[-3:])
        out = [self.model(p[i:i + self.batch_size].to(self.device), g[i:i + self.batch_size].to(self.device)).cpu()
               for i in range(0, p.shape[0], self.batch_size)]
        return MetricResult(torch.cat(out).double().reshape(lead))
