"""``--verify``: every pooled batch against a plain NumPy reference built from the raw rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from emulator.kernels.pooling import KIND_STAGED
from tracegen.errors import InputError

if TYPE_CHECKING:
    from emulator.replay.engine import BatchOutput, Replayer, _Prepared


class Verifier:
    """Checks each pooled batch against :func:`emulator.kernels.reference.pool_reference`."""

    def __init__(self, rep: Replayer):
        self.rep = rep
        self.exact_bags = 0
        self.tt_bags = 0
        self.max_tt_abs_diff = 0.0
        self.max_tt_bound_used = 0.0

    def check(self, p: _Prepared, out: BatchOutput) -> None:
        from emulator.kernels.reference import pool_reference
        from emulator.tt.decomposition import tt_rebuild_rows_reference

        store = self.rep.store
        for tab, kind, off, ids, got in zip(self.rep.tables, p.kinds, p.offsets, p.old_ids, out.pooled):
            store.check_rows(tab.index, ids)  # the reference must not read corrupt bytes (chunk CRC32s)
            rows = store.read_rows(tab.index, ids).astype(np.float32)
            tt_mask = kind == KIND_STAGED
            if not tt_mask.any():
                want = pool_reference(rows, off)
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
            if not np.allclose(got, tt_want, rtol=1e-4, atol=1e-5 * scale):
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}: TT-served embeddings "
                                 f"differ from the NumPy TT reference")
            c = np.concatenate([[0], np.cumsum(tt_mask, dtype=np.int64)])
            n_tt = c[off[1:]] - c[off[:-1]]  # TT lookups per bag
            # the manifest's max abs error is measured on a sample of rows: allow 2x for rows outside it
            bound = 2.0 * tab.tt_error["max_abs_error"] * n_tt[:, None] + 1e-6
            diff = np.abs(got - raw_want)
            if (diff > bound).any():
                raise InputError(f"verify failed: batch {p.batch.index}, table {tab.name}: TT error "
                                 f"{float(diff.max()):.3g} exceeds the manifest bound")
            self.tt_bags += got.shape[0]
            self.max_tt_abs_diff = max(self.max_tt_abs_diff, float(diff.max(initial=0.0)))
        store.close()  # unmap the reference's pages: resident memory stays bounded by one batch

    def summary(self) -> dict[str, Any]:
        return {"ok": True, "exact_bags": self.exact_bags, "tt_bags": self.tt_bags,
                "max_tt_abs_diff": self.max_tt_abs_diff}
