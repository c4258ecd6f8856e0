"""Every runtime threshold in ``gb.RuntimeOptions`` is one the runtime reads: an option
that nothing reads (a leftover of removed code) would tell users it does something."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import graphbp as gb

RUNTIME = Path(gb.__file__).parent / "runtime"


def test_every_runtime_option_is_read_by_the_runtime():
    code = "\n".join(p.read_text() for p in sorted(RUNTIME.glob("*.py")) if p.name != "options.py")
    unread = [f.name for f in dataclasses.fields(gb.RuntimeOptions) if not re.search(rf"\.{f.name}\b", code)]
    assert unread == []
