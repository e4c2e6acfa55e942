"""Reading a finished or running sweep: feasible Pareto front, cheapest non-collapsing config, importance, terminal view."""
