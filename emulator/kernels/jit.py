"""Numba flags for the emulator's kernels: the one config module lives in :mod:`tracegen.jit`
(the lowest package, so trace generation shares it); this re-exports it."""

from tracegen.jit import NJIT_OPTIONS, njit

__all__ = ["NJIT_OPTIONS", "njit"]
