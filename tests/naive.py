"""Slow, obviously right reference implementations that the tests compare kernels against.

Each engineer appends the references for their kernels below (stumpy's tests/naive.py).
"""

from __future__ import annotations

import numpy as np
