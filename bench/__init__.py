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
* ``workloads/``: one module per workload (W1 … W7, and W9: backup and restore; W8 is the peak-RSS column;
  W10 … W15 below);
* ``clitools.py``: running the ``credvault`` command as a user does (an installed copy, a session unlocked
  and the agent started, a file-backed keyring and clipboard) and ``pass show`` beside it (W2, W10, W12);
* ``report.py`` and ``machine.py``: the table, the document, the machine description.

The workloads of issue 13 (each module's docstring says exactly what it runs and checks):

* **W10** (``w10_everyday.py``): ``whoami``, ``client list``, ``secret list``, ``secret show``, ``checkout
  --show``, ``checkout`` to the clipboard (the file backend the tests use; no X server here), ``audit log
  --limit 20``, ``checkin`` and ``secret add --password-stdin``, each as its own process of the installed
  console script with a session unlocked and the agent running; baseline ``pass show``; target ≤ 2×.
* **W11** (``w11_cold_checkout.py``): in-process checkout of a secret not touched before in the process,
  each in a client no other sample used, through the one ``Vault`` object the process keeps (the session);
  baseline the durable-commit floor (W1's); target ≤ 3×. A fresh ``Vault`` object per checkout is reported.
* **W12** (``w12_listings.py``): ``list_secrets`` of one client of 10,000 secrets against one JOIN plus the
  same decryption with the library's recipes (target ≤ 2×); admin ``client list`` and ``status`` at 10,000
  clients, in-process and as CLI commands (target ≤ 1 s).
* **W13** (``w13_grants.py``): a checkout by an engineer holding 1,000 grants against one holding 10, for
  the same client (target ≤ 1.2×).
* **W14** (``w14_contention.py``): a checkout every 50 ms in a second process, alone and then while an
  admin runs ``verify_audit()`` over the run's audit scale, ``report_access``, ``list_secrets`` (10,000) and
  ``export_audit()``, on SQLite and on PostgreSQL: p99 against the solo p99 (target ≤ 3×), no failure.
* **W15** (``w15_export.py``): ``export_audit()`` of the audit-scale log (W14's SQLite data set): the step's
  peak RSS (target ≤ 150 MiB) against the same step reading 20 events.

``--audit-events N`` sets the audit scale of W6, W14 and W15 (default: the scale; a full run: 1,000,000).
"""
