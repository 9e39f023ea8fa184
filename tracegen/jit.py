"""One place for Numba compiler flags (stumpy keeps them in one config module); it sits in
``tracegen`` (the lowest package) so every package can use it.

Kernels are compiled with ``cache=True`` (so a second run skips compilation)
and ``nogil=True`` (so an IO thread keeps running while a kernel pools).
``fastmath`` stays off for kernels whose results must equal the NumPy
reference bit for bit; kernels that only need a tolerance may opt in.
"""

from __future__ import annotations

import numba

NJIT_OPTIONS = dict(cache=True, nogil=True, fastmath=False, boundscheck=False, error_model="numpy")


def njit(*args, **overrides):
    """``numba.njit`` with the project's default options (overridable per kernel)."""
    opts = {**NJIT_OPTIONS, **overrides}
    if args and callable(args[0]):
        return numba.njit(**opts)(args[0])
    return numba.njit(*args, **opts)
