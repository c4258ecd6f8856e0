"""Compiling graphs into schedules and running them over NumPy buffers."""

from .options import RuntimeOptions
from .program import Program, compile
from .reference import evaluate
from .schedule import Partition, Schedule, partition

__all__ = ["Partition", "Program", "RuntimeOptions", "Schedule", "compile", "evaluate", "partition"]
