"""Checkpointing a :class:`graphbp.train.Trainer` every N steps, and resuming it exactly.

A trainer checkpoint holds the parameters, the optimizer state and, in ``extra``, the
trainer's position: global step, epoch, and how many batches of that epoch were done.
Batches are drawn with seed ``seed + epoch``, so skipping the done batches of the epoch
reproduces the uninterrupted run bit for bit.
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoint import load_checkpoint, save_checkpoint


def save_trainer(trainer: Any, path: str | os.PathLike, batch_in_epoch: int) -> None:
    """Write ``trainer``'s parameters, optimizer state and position to ``path`` atomically."""
    extra = {"epoch": trainer.epoch, "batch": batch_in_epoch, "history": trainer.history}
    save_checkpoint(path, trainer.params, trainer.optimizer, step=trainer.step, extra=extra)


def resume_trainer(trainer: Any, path: str | os.PathLike, n_batches: int) -> int:
    """Restore ``trainer`` from ``path`` if it exists; return the batches to skip in the epoch.

    A missing file means a fresh start (0). A checkpoint taken after an epoch's last batch
    resumes at the start of the next epoch.
    """
    if not os.path.exists(path):
        return 0
    step, extra = load_checkpoint(path, trainer.params, trainer.optimizer)
    trainer.step = step
    trainer.epoch = int(extra["epoch"])
    trainer.history = [dict(h) for h in extra.get("history", [])]
    skip = int(extra["batch"])
    if skip >= n_batches:
        trainer.epoch += 1
        skip = 0
    return skip
