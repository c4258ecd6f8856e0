"""Colours and shapes, in one place so every view speaks the same visual language.

Forward values are drawn in neutral tones with a colour per leaf kind; gradient values are
coloured by the forward op whose chain-rule rule produced them, so a glance pairs each
gradient cluster with its forward op. docs/reading-diagrams.md documents this legend.
"""

from __future__ import annotations

# Leaves and forward ops.
INPUT = {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbeafe", "color": "#2563eb"}
PARAM = {"shape": "cylinder", "style": "filled", "fillcolor": "#fef3c7", "color": "#b45309"}
CONSTANT = {"shape": "note", "style": "filled", "fillcolor": "#f3f4f6", "color": "#9ca3af", "fontsize": "9"}
OP = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ffffff", "color": "#374151"}
SHAPE_OP = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#ffffff", "color": "#9ca3af", "fontsize": "9"}
OUTPUT = {"peripheries": "2", "fillcolor": "#dcfce7", "color": "#15803d"}
SAVED = {"color": "#dc2626", "penwidth": "2.2"}
FORWARD_REF = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#fff7ed", "color": "#dc2626"}

# Gradient nodes (fill colour comes from the palette of the originating forward op).
GRAD = {"shape": "box", "style": "rounded,filled", "color": "#7f1d1d"}
UNBROADCAST = {"shape": "box", "style": "filled,bold"}  # square corners + bold: a reduction
ACCUMULATE = {"shape": "box", "style": "rounded,filled,bold", "peripheries": "2"}
SEED = {"shape": "box", "style": "filled,diagonals"}
ZEROS = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#f3f4f6", "color": "#9ca3af"}
UPDATE = {"shape": "box", "style": "rounded,filled", "fillcolor": "#ede9fe", "color": "#6d28d9"}
# A forward value recomputed in the backward schedule instead of saved (rule "remat").
REMAT = {"shape": "box", "style": "rounded,filled,dashed", "fillcolor": "#ecfeff", "color": "#0e7490",
         "penwidth": "2.0", "fontcolor": "#164e63"}

# Collapsed groups.
SCOPE_BOX = {"shape": "folder", "style": "filled", "fillcolor": "#f9fafb", "color": "#4b5563"}
RUN_BOX = {"shape": "box3d", "style": "filled", "fillcolor": "#eef2ff", "color": "#4338ca"}
CHUNK_BOX = {"shape": "box", "style": "filled,dashed", "fillcolor": "#f9fafb", "color": "#6b7280"}

# Optimisation view.
PRUNED = {"style": "rounded,filled,dashed", "fillcolor": "#f3f4f6", "color": "#9ca3af", "fontcolor": "#9ca3af"}
MERGED = {"color": "#0e7490", "penwidth": "2.2", "fillcolor": "#cffafe"}
FUSED = {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#fef9c3", "color": "#a16207"}
NEW = {"color": "#15803d", "penwidth": "2.0"}

# Edges.
EDGE_FORWARD = {"color": "#6b7280"}
EDGE_GRAD = {"color": "#b91c1c", "fontcolor": "#7f1d1d"}
EDGE_SAVED = {"color": "#ea580c", "style": "dashed", "fontcolor": "#9a3412"}
EDGE_SHAPE = {"color": "#d1d5db", "style": "dotted", "arrowhead": "empty"}
EDGE_CARRY = {"color": "#7c3aed", "fontcolor": "#5b21b6", "style": "bold", "constraint": "false"}
EDGE_LINK = {"color": "#9ca3af", "style": "dashed", "constraint": "false", "arrowhead": "open", "penwidth": "1.2"}

# Clusters.
SCOPE_CLUSTER = {"style": "rounded,dashed", "color": "#9ca3af", "fontsize": "10", "fontcolor": "#374151"}
BODY_CLUSTER = {"style": "rounded,filled", "fillcolor": "#f5f3ff", "color": "#7c3aed", "fontsize": "10",
                "fontcolor": "#5b21b6"}  # the body of a higher-order op (a cond branch, a loop body)
FORWARD_SIDE = {"style": "rounded,filled", "fillcolor": "#f8fafc", "color": "#cbd5e1", "fontsize": "13"}
BACKWARD_SIDE = {"style": "rounded,filled", "fillcolor": "#fff8f8", "color": "#fecaca", "fontsize": "13"}

# One pastel per originating forward op, cycled in the forward op's topological order.
PALETTE = (
    ("#fee2e2", "#b91c1c"),  # red
    ("#e0f2fe", "#0369a1"),  # sky
    ("#dcfce7", "#15803d"),  # green
    ("#fef3c7", "#b45309"),  # amber
    ("#ede9fe", "#6d28d9"),  # violet
    ("#fce7f3", "#be185d"),  # pink
    ("#ccfbf1", "#0f766e"),  # teal
    ("#ffedd5", "#c2410c"),  # orange
    ("#e0e7ff", "#4338ca"),  # indigo
    ("#ecfccb", "#4d7c0f"),  # lime
)


def palette(index: int) -> tuple[str, str]:
    """(light fill, strong border) for the ``index``-th originating forward op."""
    return PALETTE[index % len(PALETTE)]


def grad_cluster_style(index: int) -> dict[str, str]:
    fill, strong = palette(index)
    return {"style": "rounded,filled", "fillcolor": fill, "color": strong, "fontsize": "9", "fontcolor": strong}


def merged(*styles: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in styles:
        out.update(s)
    return out
