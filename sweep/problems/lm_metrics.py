"""Diversity and quality metrics of token samples (numpy, vectorised over rows).

Conventions as in ``sweep/problems/sources.py``: id 0 is EOS, padding follows the first EOS. *Content*
tokens are the tokens before a row's first EOS; diversity metrics look only at content, so
that EOS and padding do not count as vocabulary use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from sweep.problems.sources import EOS, item_size

if TYPE_CHECKING:
    from sweep.problems.sources import TruthLanguage

REPEAT_WINDOW = 4  # a token "repeats" when it equals one of the 4 tokens before it


def content_mask(samples: np.ndarray) -> np.ndarray:
    """True at the tokens before each row's first EOS."""
    return np.cumsum(np.asarray(samples) == EOS, axis=1) == 0


def ngram_codes(arrays: list[np.ndarray], n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each (rows, L) array: int64 codes of its n-grams (rows, L - n + 1) and a mask of
    the windows lying wholly in content. Codes are comparable across the arrays given."""
    windows = [sliding_window_view(np.asarray(a, dtype=np.int64), n, axis=1) for a in arrays]
    valid = [sliding_window_view(content_mask(a), n, axis=1).all(axis=-1) for a in arrays]
    base = 1 + max(int(a.max()) if a.size else 0 for a in arrays)
    if n * np.log2(base) < 62:  # exact positional code fits in int64
        powers = base ** np.arange(n, dtype=np.int64)
        codes = [w @ powers for w in windows]
    else:  # large vocabularies: rank the distinct n-grams of all arrays jointly
        flat = np.concatenate([w.reshape(-1, n) for w in windows])
        _, inverse = np.unique(flat, axis=0, return_inverse=True)
        splits = np.cumsum([w.shape[0] * w.shape[1] for w in windows])[:-1]
        codes = [c.reshape(w.shape[:2]) for c, w in
                 zip(np.split(inverse.ravel(), splits), windows, strict=True)]
    return list(zip(codes, valid, strict=True))


def distinct_n(samples: np.ndarray, n: int) -> float:
    """Distinct n-grams / all n-grams over the content of all rows (0 when there are none)."""
    if np.asarray(samples).shape[1] < n:
        return 0.0
    [(codes, valid)] = ngram_codes([samples], n)
    kept = codes[valid]
    return float(len(np.unique(kept)) / len(kept)) if len(kept) else 0.0


def unigram_entropy(samples: np.ndarray) -> float:
    """Entropy (nats) of the content-token frequencies pooled over all rows."""
    tokens = np.asarray(samples)[content_mask(samples)]
    if tokens.size == 0:
        return 0.0
    p = np.bincount(tokens) / tokens.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def repeated_tokens(samples: np.ndarray, window: int = REPEAT_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(repeated, eligible) masks: content tokens after the first that equal one of the
    ``window`` content tokens just before them, and all content tokens after the first."""
    x = np.asarray(samples)
    content = content_mask(x)
    repeated = np.zeros_like(content)
    for k in range(1, min(window, x.shape[1] - 1) + 1):
        repeated[:, k:] |= (x[:, k:] == x[:, :-k]) & content[:, :-k]
    eligible = content.copy()
    eligible[:, 0] = False
    return repeated & eligible, eligible


def repetition_rate(samples: np.ndarray, window: int = REPEAT_WINDOW) -> float:
    """Share of content tokens (after each row's first) that repeat one of the ``window``
    tokens before them: ~window / vocab for diverse text, -> 1 for degenerate loops."""
    repeated, eligible = repeated_tokens(samples, window)
    return float(repeated.sum() / max(eligible.sum(), 1))


def mean_length(samples: np.ndarray) -> float:
    """Mean counted tokens per row (up to and including the first EOS)."""
    return float(item_size(samples).mean()) if len(samples) else 0.0


def diversity_metrics(samples: np.ndarray) -> dict[str, float]:
    """Length and diversity of token rows (what ``lm_sample_metrics`` reports for any LM)."""
    x = np.asarray(samples)
    return {
        "mean_length": mean_length(x),
        "eos_rate": float((x == EOS).any(axis=1).mean()) if len(x) else 0.0,
        "distinct_1": distinct_n(x, 1),
        "distinct_2": distinct_n(x, 2),
        "distinct_4": distinct_n(x, 4),
        "unigram_entropy": unigram_entropy(x),
        "repetition_rate": repetition_rate(x),
    }


def minority_share(samples: np.ndarray, truth: TruthLanguage) -> tuple[float, float, float]:
    """(share, standard error, in-language share): mean P(minority dialect | row) over the
    in-language rows, its standard error (sd / sqrt(rows)), and the share of such rows."""
    x = np.asarray(samples)
    posterior = truth.dialect_posterior(x)
    ok = truth.in_language(x)
    if not ok.any():
        return float("nan"), float("nan"), 0.0
    kept = posterior[ok]
    se = float(kept.std(ddof=1) / np.sqrt(len(kept))) if len(kept) > 1 else float("nan")
    return float(kept.mean()), se, float(ok.mean())


def lm_sample_metrics(samples: np.ndarray, truth: TruthLanguage | None = None) -> dict[str, float]:
    """Diversity of a model's samples; with a known truth, their true NLL and dialect mix.

    ``sample_true_nll``: per-token NLL of the samples under the truth (quality, the
    "precision" side); ``in_language_share``: share of samples as likely per token as 99%
    of the truth's own; ``minority_share`` (with ``minority_share_se``): mean P(minority
    dialect | sample) over those in-language samples (the tail; NaN when there are none).
    Ungrammatical samples are left out because their dialect posterior is noise (~0.4 for
    uniform tokens against a 0.05 prior), which would make a degrading model look as if it
    recovered the tail; ``minority_share_all`` is the mean over all samples, for reference.
    Compare these with ``reference_metrics`` of real data, not with generation 0.
    """
    x = np.asarray(samples)
    out = diversity_metrics(x)
    if truth is not None:
        out["sample_true_nll"] = float(-truth.log_prob(x).sum() / max(item_size(x).sum(), 1))
        share, se, in_language = minority_share(x, truth)
        out.update(in_language_share=in_language, minority_share=share, minority_share_se=se,
                   minority_share_all=float(truth.dialect_posterior(x).mean()))
    return out


def reference_metrics(real: np.ndarray, truth: TruthLanguage | None = None) -> dict[str, float]:
    """The real data's values of the sample metrics, to show beside a model's: diversity as
    ``<name>_real`` (e.g. ``distinct_2_real``) and, with a truth, ``minority_share_truth``
    (with ``minority_share_truth_se``) measured the same way on the truth's own rows."""
    out = {f"{k}_real": v for k, v in diversity_metrics(real).items()}
    if truth is not None:
        share, se, _ = minority_share(real, truth)
        out.update(minority_share_truth=share, minority_share_truth_se=se)
    return out


def rare_ngram_mask(test_blocks: np.ndarray, train_blocks: np.ndarray, *, n: int = 4,
                    quantile: float = 0.1) -> np.ndarray:
    """The 'tail' of real text: held-out blocks built from the rarest n-grams.

    A block's commonness is the mean over its n-grams of log(1 + count in the training
    blocks); the blocks in the lowest ``quantile`` are the tail (at least one block). A mean,
    not a minimum, because nearly every block holds some unseen n-gram.
    """
    (test_codes, test_valid), (train_codes, train_valid) = ngram_codes([test_blocks, train_blocks], n)
    vocab, counts = np.unique(train_codes[train_valid], return_counts=True)
    pos = np.clip(np.searchsorted(vocab, test_codes), 0, max(len(vocab) - 1, 0))
    found = (vocab[pos] == test_codes) if len(vocab) else np.zeros_like(test_valid)
    log_count = np.where(found, np.log1p(counts[pos] if len(vocab) else 0), 0.0)
    commonness = (log_count * test_valid).sum(axis=1) / np.maximum(test_valid.sum(axis=1), 1)
    mask = commonness <= np.quantile(commonness, quantile)
    if not mask.any():  # pragma: no cover - quantile of a non-empty array always hits one
        mask[np.argmin(commonness)] = True
    return mask
