"""Defaults of a sweep config's ``search`` section that other layers read too.

Kept free of heavy imports: the CLI validates a sweep config (and prints its first status
line) before torch, pandas or Ray are loaded.
"""

from __future__ import annotations

#: What a sweep minimises unless ``search.objectives`` says otherwise.
DEFAULT_OBJECTIVES: dict[str, str] = {"quality_gap": "min", "total_flops": "min"}
