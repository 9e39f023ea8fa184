"""How much serving rows from TT cores or a row format changes the model's output: the accuracy report.

The same batches of a trace are replayed twice through :class:`emulator.replay.engine.Replayer`,
once under a raw plan (every row raw: ``all-dram`` or ``all-ssd``, the exact
embeddings) and once under the plan being judged (typically TT-served tables),
in lockstep, one batch at a time (a plan may also serve tables from a row format,
fp16 / int8 / int4, see :func:`format_plan`). Per table and over all tables the report
gives the mean and the largest absolute difference of the pooled embeddings and
their relative Frobenius difference ``||P_tt - P_raw||_F / ||P_raw||_F``.

With a :class:`emulator.dense.DenseModel`, each batch also gets synthetic dense
features (:func:`emulator.dense.dense_features`) and both sets of pooled
embeddings go through the model: the raw-weights model is taken as the ground
truth generator, labels are drawn ``Bernoulli(p_raw)`` with a seeded stream, and
the report gives the mean and largest ``|p_tt - p_raw|``, the AUC and the
log-loss of ``p_raw`` and of ``p_tt`` against those labels.

Memory is bounded: embedding statistics are sums and maxima accumulated batch
by batch (float64). The AUC needs every prediction at the end, so ``p_raw``,
``p_tt`` (float32) and the labels (bool) are kept: 9 bytes per sample, e.g.
9 MiB for a million samples.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.dense import DenseModel, dense_features
from emulator.plan import Plan, uniform_plan
from emulator.replay.engine import Replayer, ReplayConfig
from emulator.tiers import KIND_STAGED
from emulator.store.store import Store
from tracegen.errors import InputError
from tracegen.trace_io import TraceReader

LOG_LOSS_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] for the log-loss
_LABEL_STREAM = 0x1ABE1


# --- metrics -------------------------------------------------------------------------------------

def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) formula, ties counted one half.

    ``AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)``, ``R_pos`` the sum of
    the positives' ranks (1-based, tied scores sharing their average rank). NaN
    when the labels are all one class. O(n log n).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in size ({s.size} vs {y.size})")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts, dtype=np.float64)  # rank of the last of each group of equal scores
    avg_rank = ends - (counts - 1) / 2.0
    r_pos = float(avg_rank[inverse][y].sum())
    return (r_pos - n_pos * (n_pos + 1) / 2.0) / (float(n_pos) * float(n_neg))


def log_loss(p: np.ndarray, labels: np.ndarray, eps: float = LOG_LOSS_EPS) -> float:
    """Mean binary cross-entropy (natural log) of probabilities ``p`` against 0/1 ``labels``."""
    q = np.clip(np.asarray(p, dtype=np.float64).ravel(), eps, 1.0 - eps)
    y = np.asarray(labels).ravel().astype(bool)
    if q.shape != y.shape:
        raise ValueError(f"p and labels differ in size ({q.size} vs {y.size})")
    if q.size == 0:
        return float("nan")
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


@dataclass
class DiffStats:
    """Running statistics of ``got - want`` over any number of arrays (float64 sums)."""

    count: int = 0
    sum_abs: float = 0.0
    max_abs: float = 0.0
    sum_sq_diff: float = 0.0
    sum_sq_ref: float = 0.0

    def add(self, got: np.ndarray, want: np.ndarray) -> None:
        d = np.asarray(got, np.float64) - np.asarray(want, np.float64)
        a = np.abs(d)
        self.count += a.size
        self.sum_abs += float(a.sum())
        self.max_abs = max(self.max_abs, float(a.max(initial=0.0)))
        self.sum_sq_diff += float(np.square(d).sum())
        self.sum_sq_ref += float(np.square(np.asarray(want, np.float64)).sum())

    def merge(self, other: "DiffStats") -> None:
        self.count += other.count
        self.sum_abs += other.sum_abs
        self.max_abs = max(self.max_abs, other.max_abs)
        self.sum_sq_diff += other.sum_sq_diff
        self.sum_sq_ref += other.sum_sq_ref

    def summary(self) -> dict[str, float]:
        rel = float(np.sqrt(self.sum_sq_diff / self.sum_sq_ref)) if self.sum_sq_ref > 0 else \
            (0.0 if self.sum_sq_diff == 0 else float("inf"))
        return {"mean_abs_diff": self.sum_abs / self.count if self.count else 0.0,
                "max_abs_diff": self.max_abs, "rel_fro_diff": rel}


# --- plans -----------------------------------------------------------------------------------------

def raw_bytes(store: Store) -> int:
    """Bytes of every table's rows (unpadded): what ``all-dram`` holds in memory."""
    return sum(lay.rows * lay.row_bytes for lay in store.layouts)


def available_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def default_raw_plan(store: Store, *, dram_limit_bytes: int | None = None, trace_id: str | None = None) -> Plan:
    """``all-dram`` when every raw row fits in ``dram_limit_bytes`` (default: a quarter of the
    memory available now), else ``all-ssd``."""
    if dram_limit_bytes is None:
        avail = available_memory_bytes()
        dram_limit_bytes = avail // 4 if avail else 1 << 30
    policy = "all-dram" if raw_bytes(store) <= dram_limit_bytes else "all-ssd"
    return uniform_plan(store.store_id, {t.name: t.rows for t in store.tables}, policy, trace_id=trace_id)


def format_plan(store: Store, row_format: str, *, dram_limit_bytes: int | None = None,
                trace_id: str | None = None) -> Plan:
    """Every table that the store holds in ``row_format`` served from that format's rows (the others raw):
    all in DRAM when they fit in ``dram_limit_bytes`` (as :func:`default_raw_plan`), else read from its pages.
    InputError if no table has the format."""
    from emulator.plan import TablePlacement

    have = [t.row_format(row_format) is not None for t in store.tables]
    if not any(have):
        raise InputError(f"no table of the store has {row_format} rows (build it with --row-formats {row_format})",
                         store.path)
    if dram_limit_bytes is None:
        avail = available_memory_bytes()
        dram_limit_bytes = avail // 4 if avail else 1 << 30
    fmt_bytes = sum(t.rows * (t.row_format(row_format).row_bytes if h else t.row_bytes)
                    for t, h in zip(store.tables, have))
    all_dram = fmt_bytes <= dram_limit_bytes
    tables = tuple(TablePlacement(t.name, t.rows if all_dram else 0, row_format=row_format if h else "fp32")
                   for t, h in zip(store.tables, have))
    return Plan(store.store_id, tables, trace_id=trace_id, planner=f"{'all-dram' if all_dram else 'all-ssd'} "
                                                                    f"{row_format}")


def _check_raw_plan(plan: Plan) -> None:
    tt = [t.table for t in plan.tables if t.cold_tier == "ssd_tt"]
    if tt:
        raise InputError(f"the reference plan must serve every row raw; it serves table {tt[0]} from TT")
    q = [t for t in plan.tables if t.row_format != "fp32"]
    if q:
        raise InputError(f"the reference plan must serve every row raw; it serves table {q[0].table} "
                         f"in {q[0].row_format}")


# --- the report ------------------------------------------------------------------------------------

def accuracy_report(store: Store, reader: TraceReader, tt_plan: Plan, *, raw_plan: Plan | None = None,
                    batches: int | None = None, engine: str = "pread", dense: DenseModel | None = None,
                    seed: int = 0, dram_limit_bytes: int | None = None) -> dict[str, Any]:
    """Replay the first ``batches`` batches (default all) under ``raw_plan`` and ``tt_plan``; compare.

    ``raw_plan`` defaults to :func:`default_raw_plan` (``dram_limit_bytes`` goes
    there); it must serve every row raw. ``seed`` drives the dense features and
    the labels (the model's weights have their own seed). Returns a JSON-ready
    dict: ``raw_policy``, ``tt_planner``, ``engine``, ``batches``, ``samples``,
    ``lookups``, ``tables`` (one dict per table: ``table``, ``dim``,
    ``cold_tier``, ``hot_rows``, ``row_format`` and its ``format_rel_fro_error`` (None for fp32),
    ``tt_rank``, ``compression_ratio`` and
    ``manifest_rel_fro_error`` of that TT variant (None when raw), ``lookups``,
    ``tt_lookups``, ``mean_abs_diff``, ``max_abs_diff``, ``rel_fro_diff``),
    ``overall`` (the three differences over all tables) and ``dense`` (None
    without a model, else ``mean_abs_pred_diff``, ``max_abs_pred_diff``,
    ``auc_raw``, ``auc_tt``, ``log_loss_raw``, ``log_loss_tt``,
    ``positive_rate``, ``mean_p_raw``, ``mean_p_tt``, ``samples``,
    ``bottom_mlp``, ``top_mlp``, ``weights`` (``seeded`` or the file),
    ``weights_seed``).
    """
    if batches is not None and batches < 1:
        raise InputError(f"batches must be >= 1, got {batches}")
    if raw_plan is None:
        raw_plan = default_raw_plan(store, dram_limit_bytes=dram_limit_bytes, trace_id=reader.trace_id)
    _check_raw_plan(raw_plan)
    dims = [lay.dim for lay in store.layouts]
    if dense is not None and list(dense.table_dims) != dims:
        raise InputError(f"the dense model was made for table dims {list(dense.table_dims)}, "
                         f"the store has {dims}", store.path)
    stats = [DiffStats() for _ in store.tables]
    lookups = np.zeros(len(store.tables), np.int64)
    tt_lookups = np.zeros(len(store.tables), np.int64)
    preds: dict[str, list[np.ndarray]] = {"raw": [], "tt": [], "labels": []}
    n_batches = 0

    with Replayer(store, raw_plan, ReplayConfig(engine=engine, max_batches=batches)) as raw_rep, \
            Replayer(store, tt_plan, ReplayConfig(engine=engine, pipeline=False)) as tt_rep:

        def on_batch(out_raw) -> None:
            nonlocal n_batches
            batch = reader.batch(out_raw.index)
            p = tt_rep.prepare(batch)
            tt_rep.start_io(p)
            out_tt, _ = tt_rep.finish(p)
            for t, (got, want) in enumerate(zip(out_tt.pooled, out_raw.pooled)):
                stats[t].add(got, want)
                lookups[t] += p.kinds[t].size
                tt_lookups[t] += int(np.count_nonzero(p.kinds[t] == KIND_STAGED))
            if dense is not None:
                x = dense_features(seed, batch.index, batch.batch_size, dense.config.num_dense_features)
                h = dense.bottom(x)  # the same dense inputs for both runs: one bottom MLP
                p_raw = dense.forward(x, out_raw.pooled, bottom_out=h)
                p_tt = dense.forward(x, out_tt.pooled, bottom_out=h)
                rng = np.random.default_rng([seed, _LABEL_STREAM, batch.index])
                preds["raw"].append(p_raw)
                preds["tt"].append(p_tt)
                preds["labels"].append(rng.random(p_raw.size) < p_raw)
            n_batches += 1

        raw_rep.run(reader, on_batch=on_batch)

    overall = DiffStats()
    tables = []
    for i, (t, st) in enumerate(zip(store.tables, stats)):
        overall.merge(st)
        pl = tt_plan.placement(t.name)
        variant = store.tt_variant(i, pl.tt_rank) if pl.cold_tier == "ssd_tt" else None
        fmt = t.row_format(pl.row_format) if pl.row_format != "fp32" else None
        tables.append({
            "table": t.name, "dim": t.dim, "cold_tier": pl.cold_tier, "hot_rows": min(pl.hot_rows, t.rows),
            "row_format": pl.row_format, "format_rel_fro_error": fmt.rel_fro_error if fmt else None,
            "tt_rank": pl.tt_rank if variant else None,
            "compression_ratio": variant.compression_ratio if variant else None,
            "manifest_rel_fro_error": variant.rel_fro_error if variant else None,
            "lookups": int(lookups[i]), "tt_lookups": int(tt_lookups[i]), **st.summary(),
        })
    report: dict[str, Any] = {
        "raw_policy": raw_plan.planner, "tt_planner": tt_plan.planner, "engine": engine, "batches": n_batches,
        "samples": n_batches * reader.batch_size, "lookups": int(lookups.sum()), "tt_lookups": int(tt_lookups.sum()),
        "seed": seed, "tables": tables, "overall": overall.summary(), "dense": None,
    }
    if dense is not None:
        report["dense"] = _dense_summary(dense, preds)
    return report


def _dense_summary(dense: DenseModel, preds: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    p_raw = np.concatenate(preds["raw"]) if preds["raw"] else np.zeros(0, np.float32)
    p_tt = np.concatenate(preds["tt"]) if preds["tt"] else np.zeros(0, np.float32)
    y = np.concatenate(preds["labels"]) if preds["labels"] else np.zeros(0, bool)
    diff = np.abs(p_tt.astype(np.float64) - p_raw.astype(np.float64))
    return {
        "samples": int(y.size), "positive_rate": float(y.mean()) if y.size else float("nan"),
        "mean_p_raw": float(p_raw.mean()) if y.size else float("nan"),
        "mean_p_tt": float(p_tt.mean()) if y.size else float("nan"),
        "mean_abs_pred_diff": float(diff.mean()) if y.size else 0.0,
        "max_abs_pred_diff": float(diff.max(initial=0.0)),
        "auc_raw": auc(p_raw, y), "auc_tt": auc(p_tt, y),
        "log_loss_raw": log_loss(p_raw, y), "log_loss_tt": log_loss(p_tt, y),
        "bottom_mlp": list(dense.bottom_layers), "top_mlp": list(dense.config.top_mlp),
        "weights": dense.source, "weights_seed": dense.config.seed if dense.source == "seeded" else None,
    }
