"""The token convention shared by language models and their data (numpy only).

Items are int64 arrays (n, L); id 0 is EOS and also the padding after the first EOS; a
row without 0 is a full-length sequence.
"""

from __future__ import annotations

import numpy as np

EOS = 0


def counted_mask(tokens: np.ndarray) -> np.ndarray:
    """True at tokens up to and including each row's first EOS (the rest is padding)."""
    is_eos = tokens == EOS
    return (np.cumsum(is_eos, axis=1) - is_eos) == 0


def item_size(tokens: np.ndarray) -> np.ndarray:
    """Counted tokens per row: the length up to and including the first EOS."""
    return counted_mask(np.asarray(tokens)).sum(axis=1)
