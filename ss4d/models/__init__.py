"""SS4D / TRELLIS networks, weight-compatible with the official checkpoints."""
from .registry import UnknownModelError, build, known_models

__all__ = ["build", "known_models", "UnknownModelError"]
