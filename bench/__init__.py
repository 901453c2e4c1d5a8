"""credvault's benchmark suite: ``python bench/run.py [--scale N] [--quick] [--only W1,W6]``.

Every workload runs in its own subprocess (so that its peak memory is its own), prints
progress to stderr, and hands back figures and correctness checks. ``run.py`` prints a
table of medians and of ratios against baselines measured in the same run, and writes
it, with the machine and the versions, to ``docs/performance.md``.

Layout:

* ``run.py``: the command line; ``suite.py``: the plan of one run and its shared data
  sets; ``step.py``: one subprocess per measured step, with its peak RSS;
* ``dataset.py`` and ``auditgen.py``: the documented fast paths that make a million
  secrets and a million audit events with the library's own recipes;
* ``workloads/``: one module per workload (W1 … W7, and W9: backup and restore; W8 is the peak-RSS column);
* ``report.py`` and ``machine.py``: the table, the document, the machine description.
"""
