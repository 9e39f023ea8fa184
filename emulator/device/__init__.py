"""Emulated computational-storage devices: profiles (data), the device clock, modelled energy.

What is here (issue 12, first slice; no engine changes yet):

* ``profile``: device profiles as data (``profiles/host.toml``, ``profiles/smartssd.toml``, user TOML/JSON
  files), every figure with its source; the planner's SmartSSD-like devices are read from the same file
  (``plans.calibration.profile_devices``);
* ``clock``: a pure, deterministic list scheduler that turns per-batch core tasks, reads and link transfers
  into emulated time, per-device busy time per core kind and a per-core timeline; ``ssd``: when each read
  completes (measured latencies, or a target SSD's latency, internal parallelism and bandwidth);
* ``energy``: device energy from the clock's busy times and the profile's power figures, host energy from
  RAPL counters or utilisation x a stated TDP, queries per joule (all modelled).

Design note: how the next session's device workers feed the clock
------------------------------------------------------------------
Each device of a plan becomes a worker that owns its files, IO ring(s), TT cores and core pools. The boundary
is a narrow, serialisable request/response, so a device can later run in another process or machine:

* request (host -> device): the batch id and the device's share of the lookups (per table it serves: the
  remapped cold rows and bag offsets), nothing else; the plan and the store were handed over once, at set-up.
* response (device -> host): pooled partial sums per (table, bag) (what SCRec moves over PCIe; their byte size
  becomes the clock's ``LinkTransfer``), and, for the clock, one record per unit of work:

  - every core task as ``CoreTask(task_id, kind, duration_s, after)``: ``duration_s`` is the real kernel's
    thread-CPU time (``time.thread_time`` around the Numba ``nogil`` call on the worker's core thread), never
    a wall interval; ``after`` names what it waited for (``pool:t3`` after the reads of its pages
    ``io:17``..., ``pool:t5`` after ``rebuild:t5`` of its TT rows);
  - the reads as ``IOGroup(group_id, submit_s[], nbytes[], latency_s[])`` arrays, one group per set of reads
    a task waits for (the pages of one table's cold rows), straight from the ring's completion records: submit
    time relative to the batch's start (negative for reads queued during the previous batch's compute: the
    pipelining as executed) and the measured completion latency; a target-SSD profile ignores the latency and
    uses its own model (``emulator.device.ssd``, a Numba kernel). ``IORequest`` is the one-read form;
  - counters (lookups, pages, bytes, TT rows) as today's ``emulator.replay.counters``.

The host adds its own measured thread-CPU times (``host_work_s``: DRAM pooling, concurrent with the devices;
``host_merge_s``: adding the partials) and calls ``clock.emulate_batch`` with ``clock.clock_model(profile,
calibration rates)``. The clock never sees a wall time, so comparing its output with the measured wall time
(``host`` profile, no more cores than CPUs) tests the model rather than restating the measurement.
"""
