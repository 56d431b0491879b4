"""Reproducible experiments (``vlnkit experiment NAME``): a config, a command, a table and a plot each.

See :mod:`vlnkit.eval.experiments.runner` for what a run folder holds and how an experiment plugs in.
"""

from vlnkit.eval.experiments.runner import (
    EXPERIMENTS,
    ExperimentContext,
    ExperimentResult,
    Table,
    run_experiment,
)

__all__ = ["EXPERIMENTS", "ExperimentContext", "ExperimentResult", "Table", "run_experiment"]
