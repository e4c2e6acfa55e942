"""The analytic results of sweep/theory/REFERENCES.md (shipped beside this file) as closed forms (curves) and as seeded pass/fail checks."""
