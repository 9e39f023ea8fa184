import json

import pytest

from bench.cmd_compare import _budget, lru_plan
from emulator.replay.cache import cache_bytes_per_row
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

from tests.conftest import one_line_error, run_cli


def test_budget_parsing():
    assert _budget("5%", 2000, "b") == 100  # 5% of a 2000-byte model
    assert _budget("1KiB", 2000, "b") == 1024
    for bad in ("5XB", "0%", "abc%"):
        with pytest.raises(InputError):
            _budget(bad, 2000, "b")


def test_lru_plan_spends_the_budget_but_never_more(tiny_store, tiny_trace):
    store = Store.open(tiny_store)
    with TraceReader(tiny_trace) as r:
        plan = lru_plan(store, r, 20_000, 2)
    used = sum(p.lru_rows * cache_bytes_per_row(t["row_bytes"]) for p, t in zip(plan.tables, store.tables))
    assert 0.9 * 20_000 < used <= 20_000
    assert all(p.lru_rows <= t["rows"] and p.hot_rows == 0 for p, t in zip(plan.tables, store.tables))


def test_compare_all_policies_on_tiny(tiny_store, tiny_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--dram-budget", "10%",
                              "--profile-batches", "2", "--engine", "pread", "--no-live", "--time-limit", "5",
                              "--json", "c.json"], capsys)
    assert code == 0, err
    payload = json.loads((tmp_path / "c.json").read_text())
    policies = [r["policy"] for r in payload["rows"]]
    assert policies == ["all-dram", "all-ssd", "lru", "static-topk", "screc"]
    for r in payload["rows"]:
        assert r["batches"] == 2 and r["qps"] > 0  # batches [2, 4) replayed under every policy
        assert r["speedup_vs_all_ssd"] > 0 and r["speedup_vs_lru"] > 0
    ssd = next(r for r in payload["rows"] if r["policy"] == "all-ssd")
    assert ssd["speedup_vs_all_ssd"] == pytest.approx(1.0)
    assert next(r for r in payload["rows"] if r["policy"] == "all-dram")["bytes_read"] == 0
    assert (tmp_path / "runs").is_dir() and "all-ssd" in out


def test_compare_bad_inputs(tiny_store, tiny_trace, capsys):
    base = ["compare", "--store", str(tiny_store), "--trace", str(tiny_trace), "--no-live"]
    for extra in (["--dram-budget", "5XB"], [], ["--dram-budget", "1MiB", "--policies", "nope"],
                  ["--sweep", "budget=1,2"], ["--dram-budget", "1MiB", "--profile-batches", "99"]):
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and one_line_error(err), (extra, err)
