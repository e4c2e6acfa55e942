"""Sweeps: search space, the trial (no Ray), and the Ray Tune + Optuna driver - the only package that imports ray."""
