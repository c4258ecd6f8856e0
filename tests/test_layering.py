"""Layering: lower packages never import higher ones (graph below ops below autodiff below
passes below runtime below render), and no module imports the package root. The few lazy
exceptions are listed in ``ALLOWED``, each with its reason: a new one must be added there."""

from __future__ import annotations

import ast
from pathlib import Path

import graphbp

ROOT = Path(graphbp.__file__).parent
LAYERS = ("graph", "ops", "autodiff", "passes", "runtime", "render")
ALLOWED = {
    ("graph/node.py", "ops"),  # the NumPy-style operators build through the op builders
    ("runtime/program.py", "render"),  # Program.explain / to_dot / notebook display, lazily
    # the subgraph IR (issue 9): a body compiles and runs itself, builds its input leaves,
    # and gb.cond's and gb.scan's rules differentiate their bodies; each import is made at call time
    ("graph/subgraph.py", "runtime"), ("graph/subgraph.py", "ops"), ("ops/control.py", "autodiff"),
    ("ops/loop.py", "autodiff"),
}


def _imports(path: Path) -> list[str]:
    """The graphbp subpackages a module imports (relative imports resolved)."""
    rel = path.relative_to(ROOT)
    pkg = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = base + (node.module.split(".") if node.module else [])
            if target:
                out.append(target[0])
            else:  # ``from . import x`` at the top level: the package root
                out.extend(alias.name for alias in node.names)
    return out


def test_no_module_imports_a_higher_layer():
    bad = []
    for layer_index, layer in enumerate(LAYERS):
        for path in sorted((ROOT / layer).glob("*.py")):
            rel = str(path.relative_to(ROOT))
            for target in _imports(path):
                if target in LAYERS and LAYERS.index(target) > layer_index and (rel, target) not in ALLOWED:
                    bad.append(f"{rel} imports {target}")
    assert bad == []


def test_check_imports_what_it_uses_not_the_package_root():
    root_names = set(graphbp.__all__) if hasattr(graphbp, "__all__") else set(dir(graphbp))
    subpackages = {p.name for p in ROOT.iterdir() if p.is_dir()} | {p.stem for p in ROOT.glob("*.py")}
    names = set(_imports(ROOT / "check.py"))
    assert names <= subpackages, names - subpackages
    assert not (names & (root_names - subpackages))


def _op_name_literal_tests(tree: ast.AST) -> list[int]:
    """Lines comparing an op's name (``x.op.name``, ``type(op).__name__``) with string literals."""

    def names_an_op(e: ast.AST) -> bool:
        if isinstance(e, ast.Attribute) and e.attr == "name":  # x.op.name, op.name, self.op.name
            v = e.value
            return isinstance(v, ast.Attribute) and v.attr == "op" or isinstance(v, ast.Name) and v.id == "op"
        return isinstance(e, ast.Attribute) and e.attr == "__name__"

    def literal(e: ast.AST) -> bool:
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            return bool(e.elts) and all(literal(x) for x in e.elts)
        return isinstance(e, ast.Constant) and isinstance(e.value, str)

    return [c.lineno for c in ast.walk(tree) if isinstance(c, ast.Compare)
            and any(names_an_op(a) and literal(b) or names_an_op(b) and literal(a)
                    for a, b in zip([c.left, *c.comparators], c.comparators))]


def test_no_module_branches_on_an_op_name():
    """Issue 9: a fact about an op lives on the op (``Op.leaf_kind``, ``view``, ...); no code
    branches on an op's name, where a new or renamed op would silently miss the branch."""
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        bad += [f"{path.relative_to(ROOT)}:{line}" for line in _op_name_literal_tests(ast.parse(path.read_text()))]
    assert bad == []
