"""Measured accuracy and what is made of it: the published accuracy tables and task scores (tables), one
scored view per scheme, made once and read by every ranking (scores), and the recommendation with the one
ranking rule of deployments (recommend).

May import: planner.core's base modules only (it ranks plans; it never sizes them).
"""
