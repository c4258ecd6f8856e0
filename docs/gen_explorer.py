"""Write the HTML explorer of each example to docs/explorer/NAME.html (``nox -s docs`` runs it).

Each page is self-contained (open it from disk); the equations tab shows the schedules as
LaTeX typeset offline. Deterministic: rerunning without code changes rewrites identical bytes.
"""

from __future__ import annotations

import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXAMPLES = ("mlp_digits", "cnn_digits", "lstm_charlm")


def main() -> int:
    sys.path.insert(0, ROOT)
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    import graphbp as gb

    out = os.path.join(HERE, "explorer")
    os.makedirs(out, exist_ok=True)
    for name in EXAMPLES:
        path = os.path.join(ROOT, "examples", f"{name}.py")
        if not os.path.isfile(path):
            continue
        build = runpy.run_path(path, run_name="__graphbp_explorer__")["build"]
        target = os.path.join(out, f"{name}.html")
        gb.render(build(), target, collapse="grad")
        print(f"wrote {os.path.relpath(target, ROOT)} ({os.path.getsize(target) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
