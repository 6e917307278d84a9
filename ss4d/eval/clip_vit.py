"""CLIP image tower (OpenAI ``VisionTransformer``, e.g. ViT-B/32), implemented here, and CLIP image similarity.

Weights: the OpenAI checkpoint key layout (``visual.conv1.weight``, ``visual.class_embedding``,
``visual.positional_embedding``, ``visual.ln_pre.{weight,bias}``, ``visual.transformer.resblocks.{i}.{ln_1,
attn.in_proj_weight, attn.in_proj_bias, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}``, ``visual.ln_post``,
``visual.proj``); text-tower keys are ignored. open_clip's OpenAI-pretrained ``ViT-B-32`` state dicts use the same
keys. The architecture (width, patch, layers, resolution, output dim) is read from the shapes; heads =
width / 64 as in OpenAI's ``build_model``.

OpenAI distributes ``ViT-B-32.pt`` as a TorchScript archive (fp16), which ``torch.load(weights_only=True)`` cannot
open and which may execute code. Convert it once, on a machine where you trust the file::

    python -c "import torch; sd = torch.jit.load('ViT-B-32.pt', map_location='cpu').state_dict(); \\
torch.save({k: v.float() for k, v in sd.items() if k.startswith('visual.')}, 'clip_vit_b32_visual.pth')"

or pass ``allow_torchscript=True`` to :func:`load_clip_visual` / :class:`CLIPSimilarityMetric` (off by default).

Preprocessing (OpenAI ``clip.load`` transform, on tensors): resize so the shorter side is the model resolution
(224) with antialiased bicubic interpolation (PIL-like), centre crop, clamp to ``[0, 1]``, normalise with the CLIP
mean/std. OpenAI's pipeline goes through 8-bit PIL images, so embeddings differ from it by rounding only.

CLIP image similarity of a pair = cosine of the L2-normalised image embeddings (``ln_post(x_cls) @ proj``).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import MetricResult, read_weight_file

__all__ = [
    "CLIPVisionTransformer",
    "CLIPSimilarityMetric",
    "CLIP_MEAN",
    "CLIP_STD",
    "VIT_B_32",
    "clip_preprocess",
    "clip_image_similarity",
    "load_clip_visual",
    "try_load_clip_visual",
    "visual_config_from_state_dict",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_B_32 = dict(input_resolution=224, patch_size=32, width=768, layers=12, heads=12, output_dim=512)


class _Attention(nn.Module):
    """``nn.MultiheadAttention`` parameter layout (``in_proj_weight [3D, D]``, ``in_proj_bias``, ``out_proj``)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"CLIP: width {width} not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, D]
        B, L, D = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias).view(B, L, 3, self.heads, D // self.heads)
        q, k, v = qkv.unbind(2)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.out_proj(o.transpose(1, 2).reshape(B, L, D))


class _QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class _ResBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = _Attention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", _QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.Sequential(*[_ResBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class _Visual(nn.Module):
    def __init__(self, input_resolution: int, patch_size: int, width: int, layers: int, heads: int, output_dim: int):
        super().__init__()
        if input_resolution % patch_size:
            raise ValueError(f"CLIP: resolution {input_resolution} not divisible by patch {patch_size}")
        self.input_resolution = input_resolution
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # [B, grid^2, D], row-major patches
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIPVisionTransformer(nn.Module):
    """OpenAI CLIP image tower; ``state_dict`` keys are ``visual.*`` exactly as in the OpenAI checkpoint.

    ``forward(images)``: *preprocessed* ``[B, 3, R, R]`` -> embeddings ``[B, output_dim]`` (not normalised).
    :meth:`embed` takes raw ``[..., 3, H, W]`` images in ``[0, 1]`` and returns unit embeddings ``[..., E]``."""

    def __init__(self, input_resolution: int = 224, patch_size: int = 32, width: int = 768, layers: int = 12,
                 heads: int | None = None, output_dim: int = 512):
        super().__init__()
        heads = heads if heads is not None else max(1, width // 64)
        self.config = dict(input_resolution=input_resolution, patch_size=patch_size, width=width, layers=layers,
                           heads=heads, output_dim=output_dim)
        self.visual = _Visual(input_resolution, patch_size, width, layers, heads, output_dim)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def input_resolution(self) -> int:
        return self.visual.input_resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        lead = images.shape[:-3]
        x = images.reshape(-1, *images.shape[-3:])
        dev, dt = self.visual.proj.device, self.visual.proj.dtype
        out = []
        for i in range(0, x.shape[0], batch_size):
            xi = clip_preprocess(x[i:i + batch_size].to(dev, torch.float32), self.input_resolution, self.mean, self.std)
            out.append(F.normalize(self.visual(xi.to(dt)).float(), dim=-1))
        return torch.cat(out).reshape(*lead, -1)


def clip_preprocess(images: torch.Tensor, resolution: int = 224, mean=None, std=None) -> torch.Tensor:
    """``[B, 3, H, W]`` in ``[0, 1]`` -> resize shorter side to ``resolution`` (bicubic, antialiased), centre crop
    ``resolution^2`` (torchvision's rounding), clamp to ``[0, 1]``, CLIP-normalise."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"clip_preprocess: expected [B, 3, H, W], got {tuple(images.shape)}")
    H, W = images.shape[-2:]
    if (H, W) != (resolution, resolution):
        if H <= W:
            nh, nw = resolution, int(resolution * W / H)
        else:
            nh, nw = int(resolution * H / W), resolution
        if (nh, nw) != (H, W):
            images = F.interpolate(images, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top = int(round((nh - resolution) / 2.0))
        left = int(round((nw - resolution) / 2.0))
        images = images[..., top:top + resolution, left:left + resolution]
    images = images.clamp(0.0, 1.0)
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1) if mean is None else mean
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1) if std is None else std
    return (images - mean.to(images.dtype)) / std.to(images.dtype)


def visual_config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Architecture of the image tower from the checkpoint shapes (as OpenAI's ``build_model`` does)."""
    try:
        width, _, patch, _ = sd["visual.conv1.weight"].shape
        n_tok = sd["visual.positional_embedding"].shape[0]
        output_dim = sd["visual.proj"].shape[1]
    except KeyError as e:
        raise RuntimeError(f"CLIP: state dict lacks {e.args[0]!r} (expected OpenAI 'visual.*' keys)") from None
    grid = math.isqrt(n_tok - 1)
    if grid * grid + 1 != n_tok:
        raise RuntimeError(f"CLIP: positional embedding of {n_tok} tokens is not 1 + grid^2")
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    return dict(input_resolution=patch * grid, patch_size=patch, width=width, layers=layers,
                heads=max(1, width // 64), output_dim=output_dim)


def load_clip_visual(path: str | os.PathLike, *, allow_torchscript: bool = False, heads: int | None = None,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> CLIPVisionTransformer:
    """Image tower from a state-dict file (``.pt``/``.pth`` via ``torch.load(weights_only=True)``, or
    ``.safetensors``) in the OpenAI key layout; strict on the ``visual.*`` keys. ``allow_torchscript`` opens OpenAI's
    original TorchScript ``ViT-B-32.pt`` with ``torch.jit.load`` (only for trusted files). ``heads`` overrides the
    width/64 rule."""
    sd = read_weight_file(path, "CLIP image tower", allow_torchscript=allow_torchscript)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    vis = {k: v.float() for k, v in sd.items() if k.startswith("visual.")}
    if not vis:
        raise RuntimeError(f"CLIP image tower: {os.fspath(path)} has no 'visual.*' keys (OpenAI CLIP layout expected)")
    cfg = visual_config_from_state_dict(vis)
    if heads is not None:
        cfg["heads"] = heads
    model = CLIPVisionTransformer(**cfg)
    missing, unexpected = [], []
    want = model.state_dict()
    missing = [k for k in want if k not in vis]
    unexpected = [k for k in vis if k not in want]
    if missing or unexpected:
        raise RuntimeError(f"CLIP image tower: {os.fspath(path)} key mismatch; missing {missing[:6]}, "
                           f"unexpected {unexpected[:6]}")
    try:
        model.load_state_dict(vis, strict=True)
    except RuntimeError as e:
        raise RuntimeError(f"CLIP image tower: {os.fspath(path)}: {e}") from e
    return model.to(device=device, dtype=dtype)


def try_load_clip_visual(path, *, allow_torchscript: bool = False, device="cpu"):
    """:func:`load_clip_visual` or ``(None, reason)``."""
    if path is None:
        return None, "no CLIP ViT-B/32 weights given (OpenAI checkpoint converted to a state dict)"
    try:
        return load_clip_visual(path, allow_torchscript=allow_torchscript, device=device), None
    except (FileNotFoundError, RuntimeError) as e:
        return None, str(e)


@torch.no_grad()
def clip_image_similarity(model: CLIPVisionTransformer, pred: torch.Tensor, gt: torch.Tensor,
                          batch_size: int = 32) -> torch.Tensor:
    """Cosine similarity of CLIP embeddings per image pair, ``[..., 3, H, W]`` in ``[0, 1]`` -> ``[...]``."""
    if pred.shape[:-3] != gt.shape[:-3]:
        raise ValueError(f"CLIP similarity: batch shape mismatch {tuple(pred.shape)} vs {tuple(gt.shape)}")
    return (model.embed(pred, batch_size) * model.embed(gt, batch_size)).sum(-1)


class CLIPSimilarityMetric:
    """CLIP image similarity that degrades to *not computed*: ``value, reason = metric(pred, gt)``; the value is a
    float64 tensor ``[...]``."""

    def __init__(self, weights=None, *, allow_torchscript: bool = False, device="cpu", batch_size: int = 32):
        self.model, self.reason = try_load_clip_visual(weights, allow_torchscript=allow_torchscript, device=device)
        self.batch_size = int(batch_size)

    @property
    def available(self) -> bool:
        return self.model is not None

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> MetricResult:
        if self.model is None:
            return MetricResult.not_computed(f"CLIP similarity: {self.reason}")
        return MetricResult(clip_image_similarity(self.model, pred, gt, self.batch_size).cpu().double())
