"""The ``collapse-sweep`` command line: run | resume | analyze | report | tensorboard | theory | chain."""

from __future__ import annotations

from sweep.cli.main import main

__all__ = ["main"]
