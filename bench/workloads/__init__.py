"""The workloads, one module each; each has ``run(ctx) -> Outcome`` and its step functions.

W8 (peak memory of each) is not a module: every step's peak RSS is a column of the table.
"""
