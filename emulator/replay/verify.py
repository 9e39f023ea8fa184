"""``--verify``: every pooled batch against a plain NumPy reference built from the raw rows.

Raw and DRAM rows must pool to the reference bit for bit (same float32 sums in
the same order). A table placed with a row format (fp16, int8, int4) is checked
against its stored rows dequantized in NumPy (``float32(q) * scale + bias``),
bit for bit too: it is exact against what it stores, and its distance from the
raw rows is the format's error (``screc store info``, ``screc accuracy``). A bag with TT-served rows is checked twice:

1. against the reference pooled from the TT rows rebuilt in NumPy (float64
   contractions): equal up to float32 rounding (``TT_RTOL``, ``TT_ATOL_OF_MAX``);
2. against the raw rows, within a bound derived per bag, not sampled: by the
   triangle inequality ``|sum_k tt_k - sum_k raw_k| <= sum_k |tt_k - raw_k|``
   (per dimension, over the bag's TT lookups), plus the rounding of the two
   float32 sums (each at most ``n * 2^-24 * sum_k |x_k|`` for ``n`` terms),
   plus check 1's tolerance (the kernels' rows are not the NumPy rows). Given
   check 1 this cannot fail unless the reference itself is wrong: it is a
   consistency check; what it measures, how far TT rows are from raw ones, is
   reported (``max_tt_abs_diff``).
   The per-row errors ``|tt_k - raw_k|`` come from the rows actually served,
   so the check needs no allowance for rows outside the manifest's error
   sample; rows whose error exceeds the manifest's sampled maximum are counted
   and reported (``tt_rows_over_manifest_max``), since they show that the
   manifest's figure understates the table's error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emulator.tiers import KIND_DRAM, KIND_STAGED
from tracegen.errors import InputError

from emulator.replay.types import BatchOutput, Prepared

if TYPE_CHECKING:
    from emulator.replay.engine import Replayer

F32_UNIT_ROUNDOFF = 2.0 ** -24
TT_RTOL = 1e-4  # served TT bags vs the NumPy TT reference: the kernels' float32 contractions round differently
TT_ATOL_OF_MAX = 1e-5  # ... and an absolute slack of this share of the batch's largest value


class Verifier:
    """Checks each pooled batch against :func:`emulator.kernels.reference.pool_reference`."""

    def __init__(self, rep: Replayer):
        self.rep = rep
        self.exact_bags = 0
        self.tt_bags = 0
        self.max_tt_abs_diff = 0.0
        self.max_tt_bound_used = 0.0
        self.tt_rows_over_manifest_max = 0

    def check(self, p: Prepared, out: BatchOutput) -> None:
        from emulator.kernels.reference import pool_reference
        from emulator.tt.decomposition import tt_rebuild_rows_reference

        store = self.rep.store
        for tab, lk, got in zip(self.rep.tables, p.tables(), out.pooled):
            kind, off, ids = lk.kind, lk.offsets, lk.old_ids
            rows = _reference_rows(store, tab, ids)
            tt_mask = kind == KIND_STAGED
            # devices pool their rows, the host its DRAM rows, and the host adds the partials: the same grouping
            split = None if self.rep.host_pooled else kind == KIND_DRAM
            if not tt_mask.any():
                want = pool_reference_split(rows, off, split)
                if not np.array_equal(got, want):
                    bad = int(np.argwhere((got != want).any(axis=1))[0, 0])
                    raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}, bag {bad}: "
                                     f"pooled embedding differs from the NumPy reference")
                self.exact_bags += got.shape[0]
                continue
            raw_want = pool_reference(rows, off)
            rows_tt = rows.copy()
            rows_tt[tt_mask] = tt_rebuild_rows_reference(tab.tt, ids[tt_mask])
            tt_want = pool_reference(rows_tt, off)
            scale = np.abs(tt_want).max(initial=0.0) + 1e-30
            atol = TT_ATOL_OF_MAX * scale
            if not np.allclose(got, tt_want, rtol=TT_RTOL, atol=atol):
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}: TT-served embeddings "
                                 f"differ from the NumPy TT reference")
            bound = _tt_bag_bound(rows, rows_tt, off) + TT_RTOL * np.abs(tt_want) + atol
            row_err = np.abs(rows_tt[tt_mask] - rows[tt_mask]).max(axis=1, initial=0.0)
            self.tt_rows_over_manifest_max += int(np.count_nonzero(row_err > tab.tt_error.max_abs_error))
            diff = np.abs(got - raw_want)
            if (diff > bound).any():
                b = int(np.argwhere((diff > bound).any(axis=1))[0, 0])
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}, bag {b}: TT-served "
                                 f"embedding is {float(diff[b].max()):.3g} from the raw rows' sum, more than the "
                                 f"rows' own TT errors allow ({float(bound[b].max()):.3g})")
            self.max_tt_bound_used = max(self.max_tt_bound_used, float((diff / bound).max(initial=0.0)))
            self.tt_bags += got.shape[0]
            self.max_tt_abs_diff = max(self.max_tt_abs_diff, float(diff.max(initial=0.0)))
        store.close()  # unmap the reference's pages: resident memory stays bounded by one batch

    def summary(self) -> dict[str, Any]:
        return {"ok": True, "exact_bags": self.exact_bags, "tt_bags": self.tt_bags,
                "max_tt_abs_diff": self.max_tt_abs_diff, "max_tt_bound_used": self.max_tt_bound_used,
                "tt_rows_over_manifest_max": self.tt_rows_over_manifest_max,
                "tt_bound": "per bag: sum of the served rows' |tt - raw| + float32 rounding of both sums (derived)"}


def pool_reference_split(rows: np.ndarray, offsets: np.ndarray, host: np.ndarray | None) -> np.ndarray:
    """The reference in the engine's grouping: ``host`` (bool per lookup, None: one sum) rows pooled in lookup
    order, the other rows pooled in lookup order, the two partials added in float32 (host + device)."""
    from emulator.kernels.reference import pool_reference

    if host is None or host.all():
        return pool_reference(rows, offsets)
    bag_of = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    parts = []
    for m in (host, ~host):
        counts = np.bincount(bag_of[m], minlength=offsets.size - 1)
        off = np.zeros(offsets.size, np.int64)
        np.cumsum(counts, out=off[1:])
        parts.append(pool_reference(rows[m], off))
    return parts[0] + parts[1]


def _reference_rows(store, tab, ids: np.ndarray) -> np.ndarray:
    """The float32 rows a table's lookups must pool to: its raw rows, or (a table placed with a row format)
    that format's stored rows dequantized in NumPy exactly as the kernels do. Chunk CRC32s are checked first:
    the reference must not read corrupt bytes."""
    fmt = tab.placement.row_format
    if fmt == "fp32":
        store.check_rows(tab.index, ids)
        return store.read_rows(tab.index, ids).astype(np.float32)
    from emulator.store.quant import dequantize_rows

    return dequantize_rows(store.read_format_rows(tab.index, fmt, ids, check=True), fmt, tab.layout.dim)


def _tt_bag_bound(rows: np.ndarray, rows_tt: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per bag and dimension, the most ``|pool(rows_tt) - pool(rows)|`` can be when both are float32 sums:
    ``sum_k |tt_k - raw_k|`` plus ``n * 2^-24 * sum_k (|tt_k| + |raw_k|)`` for a bag of ``n`` rows."""
    err = np.abs(rows_tt.astype(np.float64) - rows)
    mag = np.abs(rows_tt.astype(np.float64)) + np.abs(rows)

    def bag_sums(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        return c[offsets[1:]] - c[offsets[:-1]]

    n = np.diff(offsets).astype(np.float64)[:, None]
    return bag_sums(err) + n * F32_UNIT_ROUNDOFF * bag_sums(mag) * 1.01 + 1e-30
