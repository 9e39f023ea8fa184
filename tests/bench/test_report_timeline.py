"""The emulated timeline plot of ``screc report``: utilisation from the slots, a file drawn from a row."""

from __future__ import annotations

import pytest

from bench.report_timeline import core_utilisation, plot_timeline, timeline_rows

TL = {"batch": 4, "emulated_s": 0.005, "serial_s": 0.001, "parallel_s": 0.004, "after_s": 0.0, "profile": "host",
      "devices": [{"device": "dev0", "reads": [-0.001, 0.001], "partials_at_host_s": 0.004,
                   "slots": [["mem0", "mem", 0.001, 0.003, "g0.mem0"], ["compute0", "compute", 0.0, 0.004, "r0"],
                             ["mem0", "mem", 0.003, 0.004, "g1.mem0"]]}]}


def test_core_utilisation_is_busy_over_the_parallel_phase():
    # mem0: 2 ms + 1 ms of 4 ms; compute0: 4 ms of 4 ms
    assert core_utilisation(TL) == {"dev0/mem0": pytest.approx(0.75), "dev0/compute0": pytest.approx(1.0)}


def test_rows_without_a_timeline_draw_nothing(tmp_path):
    assert timeline_rows([{"policy": "all-ssd"}, {"policy": "x", "emulated": {"timeline": None}}]) == []
    assert plot_timeline([{"policy": "all-ssd"}], tmp_path / "t.png", None, None) is None


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need matplotlib (the plots extra)")
    from bench.cmd_report import _figure, _save

    out = plot_timeline([{"policy": "screc", "emulated": {"timeline": TL}}], tmp_path / "t.png", _figure, _save)
    assert out == tmp_path / "t.png" and out.stat().st_size > 1000
