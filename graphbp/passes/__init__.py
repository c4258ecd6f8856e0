"""Rewrite passes: pure functions from a graph (its roots) to a graph plus a log.

``optimize`` runs the pipeline ``gb.compile`` uses; ``verify`` checks a graph; the fused
op classes the passes create live in :mod:`graphbp.passes.fused`.
"""

from .core import LogEntry, PassResult, Rule, rule, run_rules, verify
from .fused import AddN, FusedElementwise, LogSumExp, MatMulBiasAct, SoftmaxCrossEntropy
from .nan_guard import Hazard, nan_guard
from .pipeline import PASS_NAMES, OptimizeResult, enabled_passes, optimize

__all__ = [
    "AddN", "FusedElementwise", "Hazard", "LogEntry", "LogSumExp", "MatMulBiasAct", "OptimizeResult",
    "PASS_NAMES", "PassResult", "Rule", "SoftmaxCrossEntropy", "enabled_passes", "nan_guard", "optimize",
    "rule", "run_rules", "verify",
]
