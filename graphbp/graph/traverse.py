"""Graph walks. All iterative, so 100,000-deep chains need no recursion limit."""

from __future__ import annotations

from collections.abc import Iterable

from .node import Node


def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Every node the outputs reach, inputs before users.

    Deterministic: a depth-first post-order visiting inputs left to right, outputs in order.
    """
    order: list[Node] = []
    # node -> False while on the DFS stack, True once emitted. Nodes hash by identity;
    # iterators over inputs avoid re-indexing (this walk runs several times per compile).
    state: dict[Node, bool] = {}
    get = state.get
    emit = order.append
    for root in outputs:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(root.inputs))]
        while stack:
            node, it = stack[-1]
            for child in it:
                s = get(child)
                if s is None:
                    if child.inputs:
                        state[child] = False
                        stack.append((child, iter(child.inputs)))
                        break
                    state[child] = True
                    emit(child)
                elif s is False:
                    raise ValueError(f"cycle through {child!r}")
            else:
                stack.pop()
                state[node] = True
                emit(node)
    return order


def toposort_nested(outputs: Iterable[Node]) -> list[Node]:
    """:func:`toposort` stepping into the bodies of higher-order ops (``op.subgraphs()``),
    nested bodies included: each body's nodes (placeholders first) come right before the
    node that holds them, and a node shared by several bodies appears once."""
    out: list[Node] = []
    seen: set[Node] = set()
    expanded: set[Node] = set()
    stack: list[tuple[list[Node], int]] = [(toposort(outputs), 0)]
    while stack:  # iterative: bodies nest without recursion
        order, k = stack.pop()
        while k < len(order):
            n = order[k]
            bodies = n.op.subgraphs()
            if bodies and n not in expanded:
                expanded.add(n)
                stack.append((order, k))  # back to n once its bodies are out
                stack.extend((b.nodes(), 0) for b in reversed(bodies))
                break
            if n not in seen:
                seen.add(n)
                out.append(n)
            k += 1
    return out


def users(order: Iterable[Node]) -> dict[Node, list[Node]]:
    """Map each node to the nodes (within ``order``) that consume it, in order."""
    out: dict[Node, list[Node]] = {}
    for node in order:
        out.setdefault(node, [])
        for inp in node.inputs:
            lst = out.setdefault(inp, [])
            if not lst or lst[-1] is not node:
                lst.append(node)
    return out


def depends_on(order: list[Node], sources: Iterable[Node]) -> set[Node]:
    """The nodes in topological ``order`` that have a path from any of ``sources`` (inclusive)."""
    hit = set(sources)
    for node in order:
        if node not in hit and any(i in hit for i in node.inputs):
            hit.add(node)
    return hit
