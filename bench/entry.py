"""The ``screc`` console script: imports nothing heavy before it can answer Ctrl-C with exit 130.

Importing the command line pulls in NumPy, Numba, h5py and rich (a second or
more); an interrupt during those imports would otherwise end in a traceback.
"""

from __future__ import annotations

import sys


def run() -> None:
    try:
        from bench.cli import main

        code = main()
    except KeyboardInterrupt:
        print("screc: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)
