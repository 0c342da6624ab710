"""Helpers for writing tutorial cells."""
import nbformat as nbf

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
# Figures and widgets: their JSON changes with plotly versions; checked through printed summaries.
IGNORE = {"tags": ["nbval-ignore-output"]}
