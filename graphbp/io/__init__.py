"""Files: graphs and programs (``gb.save`` / ``gb.load``) and training checkpoints.

Both use one defensive container (a ZIP of JSON plus a pickle-free ``.npz``), written
atomically; see ``docs/graph-format.md`` and ``docs/reliability.md``.
"""

from .checkpoint import load_checkpoint, save_checkpoint
from .container import Limits
from .format import FORMAT_VERSION, LoadedGraph, load, save

__all__ = ["FORMAT_VERSION", "Limits", "LoadedGraph", "load", "load_checkpoint", "save", "save_checkpoint"]
