"""Renderers: the Plan as text tables, JSON and terminal plots (no sizing logic here)."""
