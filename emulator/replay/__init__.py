"""The replay engine: serve a trace's batches under a plan.

:mod:`.engine` drives batches (pipelined IO, pooling, verification);
:mod:`.tables` opens a store's tables for a plan; :mod:`.remap` loads the
plan's address remap and hot rows; :mod:`.prepare` turns one batch into reads,
TT rebuilds and pooling sources; :mod:`.groups` batches tables of one
(dim, dtype); :mod:`.cache` is the LRU row cache tier of the baselines;
:mod:`.counters` holds the replay's counters and summaries; :mod:`.verify`
the NumPy reference check.
"""
