"""The console script answers Ctrl-C with exit 130 and one line, even while it is still importing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_interrupt_during_start_up_exits_130_without_traceback():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # `python -c` runs the same function the `screc` script runs; the interrupt comes while NumPy, Numba and
    # rich are being imported (well over a second), after the interpreter itself is up (0.5 s), before any command has started.
    proc = subprocess.Popen([sys.executable, "-c", "from bench.entry import run; run()", "trace", "presets"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err[-2000:])
    assert "Traceback" not in err and err.strip().splitlines() == ["screc: interrupted"]
