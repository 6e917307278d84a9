"""Compatibility name: the Gaussians container lives in the neutral :mod:`ss4d.gaussians` (imported by models too)."""
from ss4d.gaussians import SH_C0, Gaussians, hammersley_offsets, inverse_softplus

__all__ = ["Gaussians", "hammersley_offsets", "inverse_softplus", "SH_C0"]
