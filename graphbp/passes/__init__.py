"""Rewrite passes: pure functions from a graph (its roots) to a graph plus a log.

``optimize`` runs the pipeline ``gb.compile`` uses (:data:`PIPELINE`); ``verify`` checks a
graph. The ops passes create (``add_n``, ``matmul_bias_act``) are ordinary ops in
:mod:`graphbp.ops.fused`.
"""

from .core import LogEntry, PassResult, Rule, rule, run_rules, verify
from .nan_guard import Hazard, nan_guard
from .pipeline import PASS_NAMES, PIPELINE, OptimizeResult, PassSpec, enabled_passes, optimize

__all__ = [
    "Hazard", "LogEntry", "OptimizeResult", "PASS_NAMES", "PIPELINE", "PassResult", "PassSpec", "Rule",
    "enabled_passes", "nan_guard", "optimize", "rule", "run_rules", "verify",
]
