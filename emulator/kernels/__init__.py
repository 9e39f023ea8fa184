"""Pooling kernels (the memory-centric cores): :mod:`.pooling` (Numba sum-pooling from
mixed tiers), :mod:`.reference` (the plain NumPy reference ``--verify`` uses),
:mod:`.jit` (Numba flags), and the private SIMD and argument-check helpers."""
