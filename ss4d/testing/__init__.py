"""Test helpers: locating the shared reference data and running the official test vectors."""
from .paths import shared_dir

__all__ = ["shared_dir"]
