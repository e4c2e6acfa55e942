"""The analytic results of REFERENCES.md as closed forms (curves) and as seeded pass/fail checks."""
