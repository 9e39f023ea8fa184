"""Tensor-train tables: :mod:`.decomposition` (TT cores, TT-SVD, dense rebuild, errors)
and :mod:`.kernels` (the compute-centric cores' row-rebuild kernels, Numba, with
their SIMD helpers in :mod:`._simd`)."""
