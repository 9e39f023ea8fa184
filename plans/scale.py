"""How the MIP's solve time grows with the table count, on the modelled ``meta-2021`` preset.

The workload is ``tracegen.presets``' ``meta-2021`` (the same tables ``screc
trace gen --model meta-2021`` draws from): 856 tables (1.87 TB in all), batch
65,536 and 15.8 lookups per table per sample on average, as in Meta's
dlrm_datasets ``embedding_bag/2021`` traces, with per-table skew fitted to
that repository's ``locality_stats.txt`` (see the preset's docstring). Its
statistics here are the Zipf expectations of :mod:`plans.modelled`.
:func:`histogram_distance` measures how far the preset's expected reuse
histograms of one batch are from the published ones. Everything here is
modelled: no trace of this size exists on this machine.

``python -m plans.scale`` solves the placement MIP for the first 26, 107,
214, 428 and 856 tables on modelled SmartSSD-like devices and prints the
solve time (solver plus device assignment), the gap of the final plan
against the solver's bound and the predicted batch time of each.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from plans.types import Budgets, PlannerOptions, WorkloadStats
from tracegen.presets import META2021_TABLES, load_model
from tracegen.spec import ModelSpec

REUSE_BIN_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
# fbgemm_t856_bs65536.pt, "Ratio of index distribution at different column sizes" (bins (0,1], (1,2], ...):
META2021_LOOKUP_SHARE_BY_REUSE = (0.069, 0.044, 0.068, 0.101, 0.121, 0.104, 0.073, 0.058, 0.052, 0.050, 0.049,
                                  0.048, 0.048, 0.043, 0.031, 0.023, 0.019)
# ... and "Histogram of col sizes" (share of the unique rows of a batch):
META2021_UNIQUE_SHARE_BY_REUSE = (0.473, 0.152, 0.139, 0.112, 0.072, 0.032, 0.011, 0.005, 0.002, 0.001, 0.0,
                                  0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def meta2021_spec(n_tables: int = META2021_TABLES) -> ModelSpec:
    """The first ``n_tables`` tables of the ``meta-2021`` preset."""
    spec = load_model("meta-2021")
    return ModelSpec(name=spec.name, tables=spec.tables[:n_tables], batch_size=spec.batch_size)


def meta2021_stats(n_tables: int = META2021_TABLES, tt_ranks: Sequence[int] = (8, 16, 32)) -> WorkloadStats:
    """Modelled statistics of the first ``n_tables`` tables of the ``meta-2021`` preset."""
    from plans.modelled import modelled_stats

    return modelled_stats(meta2021_spec(n_tables), tt_ranks)


# --- fitting the skew to the published reuse histogram ----------------------------------------


_LGAMMA = np.array([math.lgamma(x + 1) for x in range(601)])
_ERF = np.vectorize(math.erf)


def _poisson_cdf(lam: np.ndarray, ks: Sequence[int]) -> np.ndarray:
    """P(Poisson(lam) <= k), shape (len(lam), len(ks)): exact sums for lam <= 200, normal approximation above."""
    lam = np.asarray(lam, dtype=np.float64)
    ks_arr = np.asarray(ks, dtype=np.int64)
    out = np.empty((lam.size, ks_arr.size))
    small = lam <= 200
    if np.any(small):
        ls = lam[small]
        j = np.arange(_LGAMMA.size)
        cdf = np.cumsum(np.exp(j[None, :] * np.log(np.maximum(ls[:, None], 1e-300)) - ls[:, None] - _LGAMMA[None, :]),
                        axis=1)
        idx = np.clip(ks_arr, 0, j[-1])
        vals = np.minimum(cdf[:, idx], 1.0)
        vals[:, ks_arr < 0] = 0.0
        out[small] = vals
    big = ~small
    if np.any(big):
        lb = lam[big][:, None]
        out[big] = 0.5 * (1 + _ERF((ks_arr[None, :] + 0.5 - lb) / np.sqrt(2 * lb)))
    return out


def reuse_histograms(spec: ModelSpec, buckets: int = 64) -> tuple[np.ndarray, np.ndarray, float]:
    """Expected (unique-row share, lookup share) per reuse bin of one batch, and lookups per unique row."""
    from plans.modelled import zipf_cumulative

    edges = np.array(REUSE_BIN_EDGES[1:], dtype=np.float64)  # upper edges of bins 1..16; last bin open
    nb = len(REUSE_BIN_EDGES)
    uniq, look = np.zeros(nb), np.zeros(nb)
    for t in spec.tables:
        L = t.pooling.mean_lookups * spec.batch_size
        b = np.unique(np.round(np.geomspace(1, t.rows + 1, buckets + 1)).astype(np.int64))
        total = zipf_cumulative(t.rows, t.zipf_alpha)
        mass = (zipf_cumulative(b[1:] - 1, t.zipf_alpha) - zipf_cumulative(b[:-1] - 1, t.zipf_alpha)) / total
        n = (b[1:] - b[:-1]).astype(np.float64)
        lam = L * mass / n
        # P(C <= e) at each upper edge e (bins (prev, e]), and at e - 1 for the lookup shares
        both = _poisson_cdf(lam, [int(e) for e in edges] + [int(e) - 1 for e in edges])
        cdf, cdf_m1 = both[:, :edges.size], both[:, edges.size:]
        p0 = np.exp(-lam)
        in_bin = np.diff(np.concatenate([p0[:, None], cdf, np.ones((lam.size, 1))], axis=1), axis=1)
        # E[C 1{C in (a, b]}] = lam * P(a <= C' <= b - 1), C' ~ Poisson(lam)
        look_cdf = np.concatenate([np.zeros((lam.size, 1)), cdf_m1, np.ones((lam.size, 1))], axis=1)
        look_bin = lam[:, None] * np.diff(look_cdf, axis=1)
        uniq += (n[:, None] * in_bin).sum(axis=0)
        look += (n[:, None] * look_bin).sum(axis=0)
    return uniq / uniq.sum(), look / look.sum(), float(look.sum() / uniq.sum())


def histogram_distance(spec: ModelSpec) -> float:
    """L1 distance between the cumulative reuse histograms (lookups and unique rows) of ``spec`` and the reference."""
    u, lk, _ = reuse_histograms(spec)
    ref_u = np.array(META2021_UNIQUE_SHARE_BY_REUSE)
    ref_l = np.array(META2021_LOOKUP_SHARE_BY_REUSE)
    return float(np.abs(np.cumsum(lk) - np.cumsum(ref_l)).sum() + np.abs(np.cumsum(u) - np.cumsum(ref_u)).sum())


# --- solve-time scaling ------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalePoint:
    tables: int
    variables: int
    constraints: int
    build_s: float
    solve_s: float
    status: str
    gap: float | None
    gap_source: str
    predicted_batch_s: float | None
    tie_break: str = "-"  # status of the second stage (least total work at the optimal batch time)
    total_s: float = 0.0  # build + both solve stages + reading the plan back


def scaling_run(counts: Sequence[int] = (26, 107, 214, 428, 856), *, devices: int = 4,
                dram_share: float = 0.02, time_limit_s: float = 50.0, gap: float = 1e-3, max_rel_error: float = 0.02,
                solver: str = "cbc", stats: WorkloadStats | None = None, on_point=None) -> list[ScalePoint]:
    """Plan the first n tables of meta-2021 with the MIP (host DRAM = ``dram_share`` of their bytes)."""
    from plans.calibration import default_calibration, smartssd_profiles
    from plans.mip import build_problem
    from plans.mip_solve import extract_plan, solve_placement

    full = stats or meta2021_stats(max(counts))
    calib = default_calibration()
    devs = smartssd_profiles(devices)
    points = []
    for n in counts:
        sub = WorkloadStats(full.tables[:n], full.batch_size, "modelled", notes=full.notes)
        budget = int(dram_share * sum(t.table_bytes for t in sub.tables))
        t0 = time.perf_counter()
        options = PlannerOptions(solver=solver, time_limit_s=time_limit_s, gap=gap)
        prob, handles = build_problem(sub, calib, Budgets(budget, max_rel_error), devs, options)
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        res = solve_placement(prob, handles, options)  # both stages (batch time, then least total work)
        solve_s = time.perf_counter() - t1
        s = extract_plan(prob, handles, res).solver if res.status in ("optimal", "feasible") else res.to_dict()
        tb = res.tie_break or {}
        p = ScalePoint(n, res.variables, res.constraints, build_s, solve_s, s["status"], s["gap"],
                       s["gap_source"], s["objective_s"], str(tb.get("status", "-")), time.perf_counter() - t0)
        points.append(p)
        if on_point:
            on_point(p)
    return points


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plans.scale",
                                 description="MIP solve time vs table count on the modelled meta-2021 workload "
                                             "(example: python -m plans.scale --counts 26 856 --time-limit 60)")
    ap.add_argument("--counts", type=int, nargs="+", default=[26, 107, 214, 428, 856])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--dram-share", type=float, default=0.02, help="host DRAM budget as a share of the table bytes")
    ap.add_argument("--time-limit", type=float, default=50.0, help="solver time limit per size (default 50 s)")
    ap.add_argument("--gap", type=float, default=1e-3, help="relative gap at which the solver stops (default 1e-3)")
    ap.add_argument("--solver", default="cbc")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    stats = meta2021_stats(max(a.counts))
    print(f"modelled meta-2021 statistics for {max(a.counts)} tables in {time.perf_counter() - t0:.1f} s "
          f"({sum(t.table_bytes for t in stats.tables) / 1e12:.2f} TB; all figures modelled); the preset's reuse "
          f"histograms are {histogram_distance(meta2021_spec(max(a.counts))):.3f} (L1, cumulative) from Meta's")
    print(f"{a.devices} modelled SmartSSD-like devices, host DRAM = {a.dram_share:.0%} of the table bytes, "
          f"solver {a.solver}, time limit {a.time_limit:g} s, gap target {a.gap:g}")
    print(f"{'tables':>6} {'vars':>7} {'rows':>6} {'build s':>8} {'solve s':>8} {'total s':>8} {'status':>9} "
          f"{'gap':>9} {'tie-break':>9} {'batch s (modelled)':>18}")

    def show(p: ScalePoint) -> None:
        gap = "unknown" if p.gap is None else f"{p.gap:.2e}"
        bt = "-" if p.predicted_batch_s is None else f"{p.predicted_batch_s:.4f}"
        print(f"{p.tables:>6} {p.variables:>7} {p.constraints:>6} {p.build_s:>8.2f} {p.solve_s:>8.2f} "
              f"{p.total_s:>8.2f} {p.status:>9} {gap:>9} {p.tie_break:>9} {bt:>18}", flush=True)

    scaling_run(a.counts, devices=a.devices, dram_share=a.dram_share, time_limit_s=a.time_limit, gap=a.gap,
                solver=a.solver, stats=stats, on_point=show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
