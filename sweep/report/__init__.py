"""The self-contained HTML report of a sweep and its figures."""
