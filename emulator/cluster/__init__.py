"""screc on a Ray cluster (the optional ``cluster`` extra: ``pip install 'screc[cluster]'``).

Modules: :mod:`.connect` (connecting with ``--ray ADDRESS|auto``, the nodes and
their local disks, placing a task on one node), :mod:`.manifest` (the cluster
manifest naming every shard of a sharded store), :mod:`.shards` (building and
verifying a store's shards each on the node that serves it, resumable),
:mod:`.sweep` (independent replays as Ray tasks, one per node's replay slot),
:mod:`.trace_parts` (a trace generated as parts, read as one trace) and
:mod:`.project` (the modelled projection to more nodes). Ray is imported only
when a function here is called; see docs/cluster.md for how to start nodes.
"""
