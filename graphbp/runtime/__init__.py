"""Compiling graphs into schedules and running them over NumPy buffers."""

from .program import Program, compile
from .schedule import Schedule

__all__ = ["Program", "Schedule", "compile"]
