"""DINOv2 vision transformer (with register tokens) and the SS4D image conditioner.

Weight-compatible with ``facebookresearch/dinov2`` ``DinoVisionTransformer``: the ``state_dict`` keys and shapes
(``cls_token``, ``pos_embed``, ``register_tokens``, ``mask_token``, ``patch_embed.proj``, ``blocks.{i}.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``) are identical, so the public hub checkpoints
(e.g. ``dinov2_vitl14_reg4_pretrain.pth``) load strictly with :func:`load_dinov2_weights`.

Token order: ``[CLS, registers, patches row-major]``. The position embedding is added to CLS + patches *before* the
registers are inserted (registers carry no position). Blocks are pre-LN (eps 1e-6) with LayerScale, exact-erf GELU MLP
(or SwiGLU for ``ffn_layer="swiglu"``), softmax attention with scale ``1/sqrt(head_dim)``.

SS4D conditioning (:class:`DinoV2Conditioner`): image in [0, 1] -> 518x518 -> ImageNet normalisation -> ViT-L/14-reg4
-> ``x_prenorm`` (all tokens after the last block, before the final norm) -> ``layer_norm`` without affine (eps 1e-5):
``[T, 1 + 4 + 37*37 = 1374, 1024]``.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextlib import nullcontext

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "DinoV2",
    "DinoV2Conditioner",
    "DinoVisionTransformer",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "load_dinov2_weights",
    "read_state_dict",
    "vit_small",
    "vit_base",
    "vit_large",
    "vit_giant2",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    """Non-overlapping ``patch x patch`` conv: ``[B, C, H, W] -> [B, (H/p)*(W/p), D]`` (row-major patches)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768):
        super().__init__()
        self.img_size = (img_size, img_size)
        self.patch_size = (patch_size, patch_size)
        self.patches_resolution = (img_size // patch_size, img_size // patch_size)
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p = self.patch_size[0]
        if h % p or w % p:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch size {p}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        # fused output channels = [q | k | v], each head-major [H, D]
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.act = nn.GELU()  # exact erf
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """``w3(silu(a) * b)`` with ``[a | b] = w12(x)``; hidden width rounded as in DINOv2's fused SwiGLU."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(a) * b)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        init_values: float | None = None,
        ffn_layer: str = "mlp",
    ):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        # registration order = official state_dict order
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        if ffn_layer == "mlp":
            self.mlp = Mlp(dim, hidden, bias=ffn_bias)
        elif ffn_layer in ("swiglu", "swiglufused"):
            self.mlp = SwiGLUFFN(dim, hidden, bias=ffn_bias)
        elif ffn_layer == "identity":
            self.mlp = nn.Identity()
        else:
            raise ValueError(f"unknown ffn_layer {ffn_layer!r}")
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class BlockChunk(nn.ModuleList):
    """A chunk of blocks (``block_chunks > 0``); padded with Identity so keys keep the global block index."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for b in self:
            x = b(x)
        return x


# ----------------------------------------------------------------------------------------------------------------------
# the vision transformer
# ----------------------------------------------------------------------------------------------------------------------
class DinoV2(nn.Module):
    """DINOv2 ``DinoVisionTransformer`` (inference). Defaults = ``dinov2_vitl14_reg`` (ViT-L/14, 4 registers, 518 px).

    ``forward_features(x)`` returns ``dict(x_norm_clstoken, x_norm_regtokens, x_norm_patchtokens, x_prenorm, masks)``;
    ``forward(x, is_training=True)`` returns that dict, ``forward(x)`` the (identity-head) CLS feature.

    Position-embedding interpolation: when the patch grid differs from ``img_size // patch_size`` the learnt grid is
    resampled bicubically (``antialias=interpolate_antialias``; with ``interpolate_offset != 0`` via a scale factor
    ``(n + offset) / M`` as in DINOv2). SS4D always feeds 518x518 images, so this path is not used there.
    Dropout / drop-path arguments are accepted and ignored (inference only).
    """

    def __init__(
        self,
        img_size: int = 518,
        patch_size: int = 14,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        ffn_bias: bool = True,
        proj_bias: bool = True,
        drop_path_rate: float = 0.0,
        drop_path_uniform: bool = False,
        init_values: float | None = 1.0,
        ffn_layer: str = "mlp",
        block_chunks: int = 0,
        num_register_tokens: int = 4,
        interpolate_antialias: bool = True,
        interpolate_offset: float = 0.0,
        **unused,
    ):
        super().__init__()
        unused.pop("block_fn", None)
        unused.pop("act_layer", None)
        unused.pop("embed_layer", None)
        if unused:
            raise TypeError(f"DinoV2: unexpected arguments {sorted(unused)}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim = self.num_features = embed_dim
        self.depth = depth
        self.num_heads = num_heads
        self.num_tokens = 1
        self.num_register_tokens = num_register_tokens
        self.interpolate_antialias = interpolate_antialias
        self.interpolate_offset = interpolate_offset

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_tokens, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

        blocks = [
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, proj_bias, ffn_bias, init_values, ffn_layer)
            for _ in range(depth)
        ]
        if block_chunks > 0:
            self.chunked_blocks = True
            size = depth // block_chunks
            self.blocks = nn.ModuleList(
                BlockChunk([nn.Identity()] * i + blocks[i : i + size]) for i in range(0, depth, size)
            )
        else:
            self.chunked_blocks = False
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Identity()
        self._init_weights()

    # state_dict order of the official module: cls_token, pos_embed, register_tokens, mask_token, patch_embed, ...
    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def num_prefix_tokens(self) -> int:
        return self.num_tokens + self.num_register_tokens

    def interpolate_pos_encoding(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Position embedding for ``x`` (CLS + patches) of an ``h x w`` pixel input, ``[1, 1 + n, D]``."""
        npatch = x.shape[1] - 1
        n = self.pos_embed.shape[1] - 1
        if npatch == n and h == w:
            return self.pos_embed
        pos = self.pos_embed.float()
        cls_pos, patch_pos = pos[:, :1], pos[:, 1:]
        dim = x.shape[-1]
        h0, w0 = h // self.patch_size, w // self.patch_size
        m = int(math.sqrt(n))
        if m * m != n:
            raise ValueError(f"pos_embed holds {n} patch positions, not a square grid")
        grid = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            # DINOv2 avoids floating-point error in the output size with a slightly enlarged scale factor
            scale = (float(h0 + self.interpolate_offset) / m, float(w0 + self.interpolate_offset) / m)
            grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", antialias=self.interpolate_antialias)
        if tuple(grid.shape[-2:]) != (h0, w0):
            raise RuntimeError(f"pos-embed interpolation produced {tuple(grid.shape[-2:])}, expected {(h0, w0)}")
        patch_pos = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat([cls_pos, patch_pos], dim=1).to(x.dtype)

    def prepare_tokens_with_masks(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat([self.cls_token.expand(b, -1, -1).to(x.dtype), x], dim=1)
        x = x + self.interpolate_pos_encoding(x, h, w).to(x.dtype)
        if self.register_tokens is not None:
            reg = self.register_tokens.expand(b, -1, -1).to(x.dtype)
            x = torch.cat([x[:, :1], reg, x[:, 1:]], dim=1)
        return x

    def _run_blocks(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict:
        x = self._run_blocks(self.prepare_tokens_with_masks(x, masks))
        x_norm = self.norm(x)
        r = self.num_register_tokens
        return {
            "x_norm_clstoken": x_norm[:, 0],
            "x_norm_regtokens": x_norm[:, 1 : r + 1],
            "x_norm_patchtokens": x_norm[:, r + 1 :],
            "x_prenorm": x,
            "masks": masks,
        }

    def forward_prenorm(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the last block, before the final norm: ``[B, 1 + R + P, D]``."""
        return self._run_blocks(self.prepare_tokens_with_masks(x))

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None, is_training: bool = False):
        ret = self.forward_features(x, masks)
        if is_training:
            return ret
        return self.head(ret["x_norm_clstoken"])


DinoVisionTransformer = DinoV2  # the official class name (used by the dinov2_tiny vector config)


def _official_defaults(kwargs: dict) -> dict:
    # DinoVisionTransformer's own defaults (the factories override only width/depth/heads/patch/registers)
    base = dict(
        img_size=224,
        init_values=None,
        ffn_layer="mlp",
        block_chunks=1,
        interpolate_antialias=False,
        interpolate_offset=0.1,
    )
    base.update(kwargs)
    return base


def vit_small(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoV2:
    return DinoV2(patch_size=patch_size, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4,
                  num_register_tokens=num_register_tokens, **_official_defaults(kwargs))


def vit_base(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoV2:
    return DinoV2(patch_size=patch_size, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
                  num_register_tokens=num_register_tokens, **_official_defaults(kwargs))


def vit_large(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoV2:
    return DinoV2(patch_size=patch_size, embed_dim=1024, depth=24, num_heads=16, mlp_ratio=4,
                  num_register_tokens=num_register_tokens, **_official_defaults(kwargs))


def vit_giant2(patch_size: int = 16, num_register_tokens: int = 0, **kwargs) -> DinoV2:
    """Close to ViT-giant (1536 wide, 40 blocks, 24 heads of 64); the hub model adds ``ffn_layer='swiglufused'``."""
    return DinoV2(patch_size=patch_size, embed_dim=1536, depth=40, num_heads=24, mlp_ratio=4,
                  num_register_tokens=num_register_tokens, **_official_defaults(kwargs))


# Arguments of the hub entry ``dinov2_vitl14_reg`` (what SS4D / TRELLIS use).
DINOV2_VITL14_REG_ARGS = dict(
    patch_size=14,
    img_size=518,
    init_values=1.0,
    ffn_layer="mlp",
    block_chunks=0,
    num_register_tokens=4,
    interpolate_antialias=True,
    interpolate_offset=0.0,
)


# ----------------------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------------------
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def read_state_dict(path: str | os.PathLike, what: str = "weights") -> dict[str, torch.Tensor]:
    """Read a ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors`` state dict, CPU tensors.

    Unwraps a ``{"model"|"state_dict"|"teacher": {...}}`` container. Raises ``FileNotFoundError`` for a missing file
    and ``RuntimeError`` naming the file when it cannot be read."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path, device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise RuntimeError(f"{what}: cannot read {path} (corrupt, truncated or not a state dict): {e}") from e
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "teacher"):
            if key in obj and isinstance(obj[key], Mapping) and not isinstance(obj[key], torch.Tensor):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"{what}: {path} does not contain a state dict of tensors (got {type(obj).__name__})")
    return dict(obj)


def _strip_prefixes(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(sd)
    changed = True
    while changed and out:
        changed = False
        for p in _PREFIXES:
            if all(k.startswith(p) for k in out):
                out = {k[len(p):]: v for k, v in out.items()}
                changed = True
    return out


def _fmt(keys, limit: int = 12) -> str:
    keys = list(keys)
    s = ", ".join(keys[:limit])
    return s + (f", ... (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_and_load_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str, what: str) -> None:
    """Strict load with one clear error listing missing / unexpected / shape-mismatched keys and the source."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = [f"{what}: state dict in {source} does not match {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_fmt(mismatched)}")
        raise RuntimeError("; ".join(parts))
    model.load_state_dict(sd, strict=True)  # copies with a cast to each parameter's dtype


def load_dinov2_weights(model: DinoV2, path: str | os.PathLike) -> DinoV2:
    """Load a DINOv2 checkpoint (hub ``dinov2_vit*_pretrain.pth`` layout, ``.pth`` or ``.safetensors``) strictly.

    A leading ``module.`` / ``backbone.`` prefix is stripped. Raises ``FileNotFoundError`` / ``RuntimeError`` with the
    file name and the offending keys."""
    sd = _strip_prefixes(read_state_dict(path, "DINOv2 weights"))
    check_and_load_state_dict(model, sd, os.fspath(path), "DINOv2 weights")
    return model


# ----------------------------------------------------------------------------------------------------------------------
# SS4D conditioner
# ----------------------------------------------------------------------------------------------------------------------
class DinoV2Conditioner(nn.Module):
    """SS4D image conditioning: ``[T, 3, H, W]`` RGB in [0, 1] -> cond tokens ``[T, 1 + R + P, D]``.

    Steps (as the official ``encode_image``): resize to ``image_size`` (bilinear, antialias; skipped when already that
    size), ImageNet normalisation, ``x_prenorm`` of the ViT, ``F.layer_norm`` over D without affine (eps 1e-5).
    Frames are encoded independently, ``batch_size`` at a time (``None``: all at once).

    ``autocast_dtype`` (e.g. ``torch.bfloat16``) runs the ViT under ``torch.autocast`` on the input's device; the final
    layer norm and the returned tokens are float32. Default: exact float32. On CPU bf16 only pays off with native bf16
    matmuls (AVX512-BF16 / AMX): on an AVX2-only CPU one 518 px ViT-L frame took ~5x longer under bf16 autocast than in
    float32 (cond mean |diff| vs float32 ~5e-3). On GPU use bf16/fp16 freely.
    """

    def __init__(
        self,
        model: DinoV2 | None = None,
        image_size: int | None = None,
        weights: str | os.PathLike | None = None,
        autocast_dtype: torch.dtype | None = None,
        batch_size: int | None = None,
    ):
        super().__init__()
        if model is None:
            if weights is not None:
                with torch.device("meta"):
                    model = vit_large(**DINOV2_VITL14_REG_ARGS)
                model = model.to_empty(device="cpu")
            else:
                model = vit_large(**DINOV2_VITL14_REG_ARGS)
        if weights is not None:
            load_dinov2_weights(model, weights)
        self.model = model.eval()
        self.image_size = int(image_size if image_size is not None else model.img_size)
        self.autocast_dtype = autocast_dtype
        self.batch_size = batch_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.model.embed_dim

    @property
    def num_tokens(self) -> int:
        g = self.image_size // self.model.patch_size
        return 1 + self.model.num_register_tokens + g * g

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[T, 3, H, W]`` in [0, 1] -> resized, ImageNet-normalised float32 ``[T, 3, S, S]``."""
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
        bs = self.batch_size or x.shape[0]
        outs = []
        for i in range(0, x.shape[0], bs):
            xi = x[i : i + bs]
            if self.autocast_dtype is not None:
                ctx = torch.autocast(device_type=xi.device.type, dtype=self.autocast_dtype)
            else:
                ctx = nullcontext()
            with ctx:
                h = self.model.forward_prenorm(xi)
            outs.append(F.layer_norm(h.float(), h.shape[-1:], eps=1e-5))
        return torch.cat(outs, dim=0)

