"""``dlforge sweep``: an audit grid (engines x attacks x eps x sample shards) or a bench grid (batch
sizes x threads) run cell by cell, locally or on a Ray cluster, resumable, merged into one report.

A spec is a TOML file::

    kind = "audit"
    engines = ["runs/mnist/engine-ort-fp32", "runs/mnist/engine-ort-int8"]   # relative to the spec
    attacks = ["fgsm", "pgd", "square"]
    eps = [0.05, 0.1, 0.2]            # L-inf budgets (eps_l2 = [...] for L2 attacks)
    samples = 500                     # test images, from `start` (default 0)
    shards = 4                        # the samples split into this many contiguous shards
    [settings]                        # any other `dlforge audit` option: pgd_steps, square_queries, seed, ...
    seed = 0

A bench spec sweeps batch sizes and thread counts; each cell times every engine in interleaved
rounds (``dlforge bench``'s rule: ratios are measured side by side), into ``OUT/bench``::

    kind = "bench"
    engines = ["runs/mnist/engine-ort-fp32", "runs/mnist/engine-ort-int8"]
    batch_sizes = [1, 8, 64]
    threads = [1, 2]
    [settings]                        # any other `dlforge bench` option: rounds, duration, ...
    rounds = 5

Each audit cell is one ``run_audit`` of one engine, one attack, one eps and one shard, with per-sample
records. Its key is the sha256 of everything that determines its result: the engine's payload
sha256 (from its verified card), the attack spec, eps, the shard's range, every audit setting and
the dlforge version. Results stream to ``OUT/cells.jsonl`` (one line per finished cell, flushed and
fsynced); a restarted sweep reads it, drops a torn last line, and computes only the cells whose key
is not there. The report (``OUT/audit``: ``audit.json``, ``samples.jsonl``, ``report.html``) is
built from the per-sample records of the spec's cells, so a row's robust accuracy over four shards
is exactly the one over their union.

Executors: ``local`` runs the cells in this process, in order; ``ray`` runs them on Ray actors
(``--workers`` of them, one CPU each; ``--address`` joins an existing cluster), each actor a
process that keeps its imports, open engine sessions, source models and datasets warm across cells
(opened once per engine and process, not per cell). A worker that dies mid-cell is restarted and the
cell retried (``max_restarts``/``max_task_retries``); a cell's result does not depend on where it ran.

The package: :mod:`.spec` (the TOML spec, the grid of cells), :mod:`.run` (the executors, the results
file) and :mod:`.merge` (one report from many cells).
"""

from dlforge.sweep.merge import merge, merge_bench
from dlforge.sweep.run import check_sweep_output, read_results, run_cell, run_sweep
from dlforge.sweep.spec import EXECUTORS, MARKER, RESULTS, SweepSpec, cells, load_spec

__all__ = ["EXECUTORS", "MARKER", "RESULTS", "SweepSpec", "cells", "check_sweep_output", "load_spec", "merge",
           "merge_bench", "read_results", "run_cell", "run_sweep"]
