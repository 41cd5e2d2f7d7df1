"""The equivalence check: check inputs, budgets, metrics."""
