"""Training: optimisers (``gb.optim``), initialisers (``gb.init``), clipping and the loop.

``gb.train.Trainer`` compiles a step program (the optimiser's updates applied in place)
and an evaluation program, and runs epochs with hooks for logging and checkpoints.
"""

from __future__ import annotations

from . import init, optim
from .clip import clip_by_global_norm, global_norm, gradient_norms
from .loop import Trainer, accuracy, format_logs, step_key
from .progress import ProgressBar

__all__ = [
    "init", "optim", "clip_by_global_norm", "global_norm", "gradient_norms", "Trainer", "accuracy", "format_logs",
    "ProgressBar", "step_key",
]
