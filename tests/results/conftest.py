"""Fixtures for the results tests: synthetic sweep directories (see results_sweeps.py)."""
from results_sweeps import eval_sweep, half_sweep, train_run  # noqa: F401  (pytest fixtures)
