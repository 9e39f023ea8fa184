"""The cost model's part for row formats (fp16, int8, int4 beside the raw rows; emulator/store/quant.py).

A table placed with a row format keeps its hot rows in DRAM in that format
(``row_bytes`` each, fewer than fp32's) and reads its cold rows from that
format's file, whose pages hold more rows, so a batch touches fewer of them.
The page count is *modelled* from the measured fp32 one (the trace statistics
are measured on the raw layout only); the host's per-lookup costs are the
fp32 ones (dequantizing is not calibrated separately). Every lookup of such a
table, hot or cold, is approximated, so its accuracy weight is its whole share
of the lookups times the format's measured relative error.
"""

from __future__ import annotations

import math

from emulator.tiers import NONE, SSD_RAW
from plans.types import PAGE_BYTES, Budgets, FormatVariant, TableLoad, TableStats


def format_cold_pages_modelled(ts: TableStats, fv: FormatVariant, fp32_pages: float) -> float:
    """Distinct 4 KiB pages per batch of the cold rows stored in row format ``fv``, *modelled* from the
    measured fp32 pages: a format page group holds ``c = rpp_f / rpp_32`` times as many rows as an fp32 one,
    and is touched unless none of the ``c`` fp32 groups it spans is, each touched independently with the
    measured share ``p`` of fp32 groups touched: ``G_f * (1 - (1 - p)^c)`` groups (``c = 1``: the fp32
    count), never more than the fp32 groups touched, times its pages per row group."""
    groups_32 = -(-ts.rows // ts.rows_per_page)
    touched_32 = fp32_pages / ts.pages_per_row
    if touched_32 <= 0 or groups_32 <= 0:
        return 0.0
    ppr_f = -(-fv.row_bytes // PAGE_BYTES)
    groups_f = -(-ts.rows // fv.rows_per_page)
    c = fv.rows_per_page / ts.rows_per_page
    p = min(touched_32 / groups_32, 1.0)
    return min(groups_f * -math.expm1(c * math.log1p(-p)) if p < 1 else groups_f, touched_32) * ppr_f


def format_load(ts: TableStats, hot_rows: int, cold_tier: str, row_format: str, total: float) -> TableLoad:
    """:func:`table_load` of a table whose DRAM and raw rows are in ``row_format``: its rows' bytes, the
    format's (modelled) pages, and every lookup approximated (hot rows are stored in the format too)."""
    fv = ts.format_variant(row_format)
    lookups = ts.lookups_per_batch
    error = (lookups / total if total > 0 else 0.0) * fv.rel_fro_error
    if cold_tier == NONE or hot_rows >= ts.rows:
        return TableLoad(lookups, fv.row_bytes, 0.0, 0.0, 0.0, 0.0, ts.rows * fv.row_bytes, 0, 0, error,
                         lookups=lookups)
    if cold_tier != SSD_RAW:
        raise ValueError(f"row format {row_format} serves DRAM and ssd_raw rows only, not {cold_tier}")
    mass, _, pages_32 = ts.at(hot_rows)
    cold_lookups = lookups * (1.0 - mass)
    pages = format_cold_pages_modelled(ts, fv, pages_32)
    reads = min(ts.reads_at(hot_rows), pages_32) * (pages / pages_32) if pages_32 > 0 else 0.0
    ssd = max(-(-ts.rows // fv.rows_per_page) - hot_rows // fv.rows_per_page, 0) * -(-fv.row_bytes // PAGE_BYTES)
    return TableLoad(lookups - cold_lookups, fv.row_bytes, cold_lookups, pages, 0.0, 0.0, int(hot_rows) * fv.row_bytes,
                     0, ssd * PAGE_BYTES, error, lookups=lookups, io_reads=reads,
                     raw_active=-math.expm1(-cold_lookups))


def allowed_formats(ts: TableStats, budgets: Budgets) -> list[str]:
    """Row formats a table may use under the accuracy budget (as :func:`allowed_tt_ranks`)."""
    if budgets.max_rel_error is not None and budgets.max_rel_error <= 0:
        return []
    if budgets.accuracy_mode == "per-table" and budgets.max_rel_error is not None:
        return [v.format for v in ts.formats if v.rel_fro_error <= budgets.max_rel_error]
    return [v.format for v in ts.formats]
