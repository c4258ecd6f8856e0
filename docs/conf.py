"""Sphinx configuration: the Markdown pages of docs/ through MyST (``nox -s docs``)."""

project = "graphbp"
extensions = ["myst_parser", "graphbp.sphinxext"]
graphbp_diagram_root = ".."  # graphbp-diagram paths are relative to the repository root
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "dev", "explorer/*.html"]
myst_heading_anchors = 3
