"""Per-frame 3D Gaussian set with the official TRELLIS/SS4D parameterisation and activations (neutral lower layer:
the models write it, render, export and eval read it).

Raw attributes (`_xyz`, `_features_dc`, `_scaling`, `_rotation`, `_opacity`) are what the Gaussian decoder
writes; the `get_*` properties apply the official activations (spec §2.10), so renders and exports agree with
the official code bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .lowdiscrepancy import radical_inverse

SH_C0 = 0.28209479177387814


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


@dataclass
class Gaussians:
    """One frame of 3D Gaussians. Shapes: `_xyz [N,3]`, `_features_dc [N,1,3]`, `_scaling [N,3]`,
    `_rotation [N,4]` (w, x, y, z before normalisation), `_opacity [N,1]`."""

    _xyz: torch.Tensor
    _features_dc: torch.Tensor
    _scaling: torch.Tensor
    _rotation: torch.Tensor
    _opacity: torch.Tensor
    aabb: tuple[float, float, float, float, float, float] = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)
    scaling_bias: float = 0.004
    opacity_bias: float = 0.1
    mininum_kernel_size: float = 0.0009  # the official "3d_filter_kernel_size"
    meta: dict = field(default_factory=dict)

    # --- the official constants, built in float32 exactly as the official code does ---
    @property
    def scale_bias(self) -> torch.Tensor:
        return inverse_softplus(torch.tensor(self.scaling_bias, dtype=torch.float32)).to(self._scaling.device)

    @property
    def opacity_bias_logit(self) -> torch.Tensor:
        p = torch.tensor(self.opacity_bias, dtype=torch.float32)
        return torch.log(p / (1 - p)).to(self._opacity.device)

    # --- activations ---
    @property
    def get_xyz(self) -> torch.Tensor:
        a = torch.tensor(self.aabb, dtype=self._xyz.dtype, device=self._xyz.device)
        return self._xyz * a[3:] + a[:3]

    @property
    def get_scaling(self) -> torch.Tensor:
        s = F.softplus(self._scaling + self.scale_bias.to(self._scaling.dtype))
        return torch.sqrt(s.square() + self.mininum_kernel_size**2)

    @property
    def get_rotation(self) -> torch.Tensor:
        bias = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=self._rotation.dtype, device=self._rotation.device)
        return F.normalize(self._rotation + bias, dim=-1)

    @property
    def get_opacity(self) -> torch.Tensor:
        return torch.sigmoid(self._opacity + self.opacity_bias_logit.to(self._opacity.dtype))

    @property
    def get_features(self) -> torch.Tensor:
        return self._features_dc

    @property
    def get_colors(self) -> torch.Tensor:
        """RGB in [0, inf) as the rasterizer computes it from SH degree 0: max(0, 0.5 + C0 * f_dc)."""
        return (0.5 + SH_C0 * self._features_dc[:, 0, :]).clamp_min(0.0)

    def __len__(self) -> int:
        return int(self._xyz.shape[0])

    def to(self, device=None, dtype=None) -> Gaussians:
        def mv(t):
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return Gaussians(mv(self._xyz), mv(self._features_dc), mv(self._scaling), mv(self._rotation),
                         mv(self._opacity), self.aabb, self.scaling_bias, self.opacity_bias,
                         self.mininum_kernel_size, dict(self.meta))

    def raw_tensors(self) -> dict[str, torch.Tensor]:
        return {"_xyz": self._xyz, "_features_dc": self._features_dc, "_scaling": self._scaling,
                "_rotation": self._rotation, "_opacity": self._opacity}

    @classmethod
    def from_activated(cls, xyz, colors, scales, rotations, opacities, **kw) -> Gaussians:
        """Build from world-space values (inverse of the activations): colours in [0,1], scales > 0,
        rotations (w,x,y,z) unit quaternions, opacities in (0,1)."""
        g = cls(torch.zeros(0, 3), torch.zeros(0, 1, 3), torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 1), **kw)
        aabb = torch.tensor(g.aabb, dtype=xyz.dtype)
        _xyz = (xyz - aabb[:3]) / aabb[3:]
        _fdc = ((colors - 0.5) / SH_C0).unsqueeze(1)
        s2 = (scales.square() - g.mininum_kernel_size**2).clamp_min(1e-12).sqrt()
        _sc = inverse_softplus(s2) - g.scale_bias.to(xyz.dtype)
        _rot = rotations - torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=rotations.dtype)
        o = opacities.clamp(1e-6, 1 - 1e-6)
        _op = torch.log(o / (1 - o)) - g.opacity_bias_logit.to(xyz.dtype)
        return cls(_xyz, _fdc, _sc, _rot, _op.reshape(-1, 1), g.aabb, g.scaling_bias, g.opacity_bias,
                   g.mininum_kernel_size)


def hammersley_offsets(num: int, voxel_size: float) -> torch.Tensor:
    """Official `offset_perturbation`: atanh((2h - 1)/voxel_size) for the Hammersley points
    h_i = (i/G, radinv_2(i), radinv_3(i))."""
    pts = torch.tensor([[i / num, radical_inverse(2, i), radical_inverse(3, i)] for i in range(num)],
                       dtype=torch.float32)
    return torch.atanh((2 * pts - 1) / voxel_size)


__all__ = ["Gaussians", "hammersley_offsets", "inverse_softplus", "SH_C0"]
