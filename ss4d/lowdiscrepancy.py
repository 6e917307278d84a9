"""Radical inverse and Hammersley points: the one owner, shared by the Gaussian decoder's offsets and the dataset's
camera sphere (neutral lower layer)."""
from __future__ import annotations

__all__ = ["PRIMES", "radical_inverse", "hammersley_sequence"]

PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)


def radical_inverse(base: int, n: int) -> float:
    """Van der Corput radical inverse of the integer ``n`` in ``base``."""
    val, inv_base = 0.0, 1.0 / base
    f = inv_base
    while n > 0:
        n, digit = divmod(n, base)
        val += digit * f
        f *= inv_base
    return val


def hammersley_sequence(dim: int, n: int, num_samples: int) -> list[float]:
    """Point ``n`` of the ``dim``-dimensional Hammersley set of ``num_samples`` points:
    ``(n / N, radinv_2(n), radinv_3(n), ...)``."""
    return [n / num_samples] + [radical_inverse(PRIMES[d], n) for d in range(dim - 1)]
