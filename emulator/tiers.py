"""The tier vocabulary, in one place: where a row lives and how the kernels tag each lookup.

Names (strings, as in plans, result files and the command line):

* ``DRAM`` (``"dram"``): host memory, the hot prefix of a table after the remap;
* ``SSD_RAW`` (``"ssd_raw"``): raw rows in 4 KiB pages on the device's NVMe;
* ``SSD_TT`` (``"ssd_tt"``): the table's TT cores in device memory, rows rebuilt;
* ``LRU`` (``"lru"``): an LRU row cache in host DRAM in front of ``ssd_raw`` (baselines);
* ``NONE`` (``"none"``): a table with no cold tier (every row hot).

Codes (small integers, what Numba kernels take):

* lookup kinds ``KIND_DRAM``/``KIND_PAGE``/``KIND_STAGED`` tag each lookup of a
  prepared batch with where the pooling kernel finds its row: the DRAM array
  (``loc`` = row), the batch's read pages (``loc`` = byte offset) or the rows
  rebuilt from TT cores (``loc`` = staged row);
* cold codes ``COLD_NONE``/``COLD_RAW``/``COLD_TT`` give a table's cold tier.
"""

from __future__ import annotations

DRAM = "dram"
SSD_RAW = "ssd_raw"
SSD_TT = "ssd_tt"
LRU = "lru"
NONE = "none"

TIERS = (DRAM, SSD_RAW, SSD_TT)  # where a plan places rows
COLD_TIERS = (SSD_RAW, SSD_TT)  # a table's cold tier in a plan
COUNTED_TIERS = (DRAM, SSD_RAW, SSD_TT, LRU)  # lookups are counted per these in replay results

KIND_DRAM = 0  # row of the DRAM array (``locs`` = row index)
KIND_PAGE = 1  # row inside the read pages (``locs`` = byte offset into ``pages``)
KIND_STAGED = 2  # TT-rebuilt row staged in float32 (``locs`` = row of ``staged``)

COLD_NONE, COLD_RAW, COLD_TT = 0, 1, 2
COLD_CODE = {NONE: COLD_NONE, SSD_RAW: COLD_RAW, SSD_TT: COLD_TT}

__all__ = ["DRAM", "SSD_RAW", "SSD_TT", "LRU", "NONE", "TIERS", "COLD_TIERS", "COUNTED_TIERS", "KIND_DRAM",
           "KIND_PAGE", "KIND_STAGED", "COLD_NONE", "COLD_RAW", "COLD_TT", "COLD_CODE"]
