"""Graph walks. All iterative, so 100,000-deep chains need no recursion limit."""

from __future__ import annotations

from collections.abc import Iterable

from .node import Node


def toposort(outputs: Iterable[Node]) -> list[Node]:
    """Every node the outputs reach, inputs before users.

    Deterministic: a depth-first post-order visiting inputs left to right, outputs in order.
    """
    order: list[Node] = []
    done: set[int] = set()
    on_stack: set[int] = set()
    for root in outputs:
        if id(root) in done:
            continue
        stack: list[tuple[Node, int]] = [(root, 0)]
        on_stack.add(id(root))
        while stack:
            node, i = stack[-1]
            if i < len(node.inputs):
                stack[-1] = (node, i + 1)
                child = node.inputs[i]
                cid = id(child)
                if cid in done:
                    continue
                if cid in on_stack:
                    raise ValueError(f"cycle through {child!r}")
                on_stack.add(cid)
                stack.append((child, 0))
            else:
                stack.pop()
                on_stack.discard(id(node))
                done.add(id(node))
                order.append(node)
    return order


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
