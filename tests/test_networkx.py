"""Export to networkx: structure, attributes, determinism."""

import networkx as nx
import numpy as np

import graphbp as gb


def _program():
    x = gb.input("x", (None, 3), dtype="float64")
    W = gb.param("W", np.ones((3, 2)))
    with gb.scope("layer"):
        h = gb.tanh(x @ W)
    loss = gb.sum(h * h)
    return x, W, loss, gb.grad(loss, W)


def test_export_matches_the_graph_the_outputs_reach():
    x, W, loss, g = _program()
    G = gb.to_networkx([loss, g])
    order = gb.toposort([loss, g])
    assert G.number_of_nodes() == len(order)
    assert G.number_of_edges() == sum(len(n.inputs) for n in order)
    assert nx.is_directed_acyclic_graph(G)
    kinds = nx.get_node_attributes(G, "kind")
    assert sorted(k for k in kinds.values() if k in ("input", "param")) == ["input", "param"]
    grads = [n for n, k in kinds.items() if k == "gradient"]
    assert grads and all(G.nodes[n]["provenance"] for n in grads)
    assert any(G.nodes[n]["scope"] == "layer" for n in G)
    # h * h reads h twice: two parallel edges with argument indices 0 and 1
    mul = next(n for n, d in G.nodes(data=True) if d["op"] == "multiply" and d["kind"] == "forward")
    assert sorted(d["index"] for _, _, d in G.in_edges(mul, data=True)) == [0, 1]
    # the gradient depends on the parameter through a path
    assert nx.has_path(G, next(n for n, k in kinds.items() if k == "param"), f"n{len(order) - 1}")


def test_export_of_a_program_is_deterministic():
    def ids():
        *_, loss, g = _program()
        G = gb.to_networkx([loss, g])
        return [(n, d["op"], d["shape"]) for n, d in G.nodes(data=True)], sorted(G.edges(keys=True))

    assert ids() == ids()
    x, W, loss, g = _program()
    prog = gb.compile([x], [loss, g])
    G = gb.to_networkx(prog)
    assert G.number_of_nodes() == len(gb.toposort(prog.outputs))
