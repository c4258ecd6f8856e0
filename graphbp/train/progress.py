"""A tiny progress bar for training loops (stderr, no dependencies)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redraws one line in place: ``label [#####.....] 12/23  loss 0.4121  1.2 ms/step``.

    It draws only on a terminal (or when forced with ``enabled=True``), at most ten times
    a second, and erases itself on :meth:`close` so per-epoch summaries printed to stdout
    stay clean in logs and pipes.
    """

    def __init__(self, total: int, label: str = "", *, width: int = 24, stream: TextIO | None = None,
                 enabled: bool | None = None, interval: float = 0.1) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.width = width
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else enabled
        self.interval = interval
        self.count = 0
        self.start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = 0

    def update(self, n: int = 1, **values: float) -> None:
        """Advance by ``n`` steps; ``values`` (e.g. ``loss=0.3``) are shown after the bar."""
        self.count += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval and self.count < self.total:
            return
        self._last_draw = now
        self._draw(now, values)

    def _draw(self, now: float, values: dict[str, float]) -> None:
        frac = self.count / self.total if self.total else 1.0
        filled = int(round(self.width * min(frac, 1.0)))
        bar = "#" * filled + "." * (self.width - filled)
        per = (now - self.start) / self.count * 1e3 if self.count else 0.0
        shown = "  ".join(f"{k} {v:.4f}" for k, v in values.items())
        line = f"{self.label} [{bar}] {self.count}/{self.total}  {shown}  {per:.1f} ms/step"
        pad = max(self._drawn - len(line), 0)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        """Erase the bar (leave the cursor at the start of an empty line)."""
        if self.enabled and self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0
