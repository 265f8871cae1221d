"""Measured accuracy and what is made of it: the published accuracy tables and task scores (tables),
and the recommendation that ranks the schemes, deployments and models of a plan (recommend).

May import: planner.core's base modules only (it ranks plans; it never sizes them).
"""
