"""Real-data sources for language models: a synthetic truth language and local text.

Token convention (shared with ``models/gpt.py``): items are int64 arrays (n, L); id 0 is
EOS and also the padding after the first EOS; a row without 0 is a full-length sequence.

``TruthLanguage`` has exactly computable probabilities, so a chain on it can measure the
KL to the truth and the share of the minority dialect. ``TextCorpus`` turns any local text
into byte-level blocks with a held-out split by document.
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import numpy as np

from models.tokens import EOS, counted_mask, item_size  # noqa: F401 - re-exported

BUILTIN_DIR = Path(__file__).parent / "corpus"


# --------------------------------------------------------------------------- truth language
class TruthLanguage:
    """A mixture of two sparse first-order Markov "dialects" over tokens 0..vocab_size-1.

    Each dialect has a Zipf-shaped start distribution and, per token, ``branching`` allowed
    successors with Zipf weights (exponent ``zipf_exponent``); after every token the sequence
    ends (EOS) with probability ``eos_prob``. Every next-token distribution is mixed with
    ``smoothing`` x uniform over all tokens, so any well-formed row has a finite likelihood
    (model samples that break the grammar are unlikely, not impossible). Rows are cut at
    ``max_len`` tokens: a row without EOS has the probability of its first ``max_len``
    tokens, so the probabilities of all rows sum to one.

    The minority dialect (share ``minority_share``) has its own transitions: it is the tail
    that collapse erodes first, measured by ``dialect_posterior``.
    """

    def __init__(self, *, vocab_size: int = 32, max_len: int = 24, minority_share: float = 0.05,
                 branching: int = 4, zipf_exponent: float = 1.0, eos_prob: float = 0.1,
                 smoothing: float = 1e-3, seed: int = 1234) -> None:
        if vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (EOS + 2 tokens), got {vocab_size}")
        if not 0 < minority_share < 1:
            raise ValueError(f"minority_share must lie in (0, 1), got {minority_share}")
        if not 1 <= branching <= vocab_size - 1:
            raise ValueError(f"branching must lie in [1, {vocab_size - 1}], got {branching}")
        if max_len < 1 or not 0 < eos_prob < 1 or not 0 <= smoothing < 1:
            raise ValueError("need max_len >= 1, 0 < eos_prob < 1 and 0 <= smoothing < 1")
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.minority_share = minority_share
        rng = np.random.default_rng(seed)
        tables = [self._dialect(rng, branching, zipf_exponent, eos_prob, smoothing)
                  for _ in range(2)]
        # (2, V + 1, V): row V is the start distribution (after BOS), row 0 (after EOS) is
        # never counted and kept uniform so its log is finite.
        self.probs = np.stack(tables)
        self.log_probs = np.log(self.probs)
        self._cdf = np.cumsum(self.probs, axis=-1)
        self.log_weights = np.log([1.0 - minority_share, minority_share])
        self._typical_nll: dict[float, float] = {}

    @property
    def block_size(self) -> int:
        return self.max_len

    def _dialect(self, rng: np.random.Generator, branching: int, exponent: float,
                 eos_prob: float, smoothing: float) -> np.ndarray:
        V = self.vocab_size
        content = np.arange(1, V)
        table = np.zeros((V + 1, V))
        table[0] = 1.0 / V
        start = _zipf(V - 1, exponent)
        table[V, rng.permutation(content)] = start
        weights = _zipf(branching, exponent)
        for state in content:
            successors = rng.choice(content, size=branching, replace=False)
            table[state, successors] = (1.0 - eos_prob) * weights
            table[state, EOS] = eos_prob
        return (1.0 - smoothing) * table + smoothing / V

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n rows (n, max_len) int64, 0-padded after EOS."""
        return self.sample_with_dialect(n, rng)[0]

    def sample_with_dialect(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n rows as ``sample`` draws them (same rng use) and the dialect of each (1 = minority)."""
        dialect = (rng.random(n) < self.minority_share).astype(np.int64)
        out = np.zeros((n, self.max_len), dtype=np.int64)
        prev = np.full(n, self.vocab_size)  # BOS
        done = np.zeros(n, dtype=bool)
        for t in range(self.max_len):
            cdf = self._cdf[dialect, prev]  # (n, V)
            u = rng.random((n, 1)) * cdf[:, -1:]
            token = np.minimum((cdf <= u).sum(axis=1), self.vocab_size - 1)
            token[done] = EOS
            out[:, t] = token
            done |= token == EOS
            prev = np.where(done, 0, token)
            if done.all():
                break
        return out, dialect

    def _dialect_log_prob(self, x: np.ndarray) -> np.ndarray:
        """(2, n): log-likelihood of each row under each dialect."""
        x = self._check(x)
        prev = np.concatenate([np.full((len(x), 1), self.vocab_size), x[:, :-1]], axis=1)
        mask = counted_mask(x)
        return (self.log_probs[:, prev, x] * mask).sum(axis=-1)

    def token_log_prob(self, x: np.ndarray) -> np.ndarray:
        """(n, L): log p(x_t | x_<t) under the mixture at every counted token, 0 elsewhere.

        The mixture is not Markov: each conditional weighs the dialects by their posterior
        given the prefix, log p(x_<=t) - log p(x_<t). Rows sum to ``log_prob``.
        """
        x = self._check(x)
        prev = np.concatenate([np.full((len(x), 1), self.vocab_size), x[:, :-1]], axis=1)
        mask = counted_mask(x)
        steps = self.log_probs[:, prev, x] * mask  # (2, n, L)
        prefix = np.cumsum(steps, axis=-1) + self.log_weights[:, None, None]
        joint = np.logaddexp(prefix[0], prefix[1])  # log p(x_<=t), (n, L)
        before = np.concatenate([np.zeros((len(x), 1)), joint[:, :-1]], axis=1)
        return (joint - before) * mask

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """Exact log-likelihood per row (nats) under the two-dialect mixture."""
        joint = self._dialect_log_prob(x) + self.log_weights[:, None]
        return np.logaddexp(joint[0], joint[1])

    def flops(self, op: str, n_items: int) -> float:
        """Cost of the oracle: per token two table look-ups and adds (one per dialect)."""
        if op in ("score", "sample"):
            return 4.0 * self.max_len * n_items
        raise ValueError(f"op: {op!r} (the truth is not fit; allowed: score, sample)")

    def dialect_posterior(self, x: np.ndarray) -> np.ndarray:
        """P(minority dialect | row) per row."""
        joint = self._dialect_log_prob(x) + self.log_weights[:, None]
        return np.exp(joint[1] - np.logaddexp(joint[0], joint[1]))

    def in_language(self, x: np.ndarray, *, quantile: float = 0.99) -> np.ndarray:
        """Rows whose per-token NLL is no worse than ``quantile`` of the truth's own rows.

        Ungrammatical rows (a degraded model's output) score near-random dialect posteriors
        (~0.4 for uniform noise), so dialect shares are only meaningful on these rows.
        """
        if quantile not in self._typical_nll:  # estimated once, from a fixed-seed sample
            own = self.sample(20_000, np.random.default_rng(0))
            per_token = -self.log_prob(own) / item_size(own)
            self._typical_nll[quantile] = float(np.quantile(per_token, quantile))
        return -self.log_prob(x) / np.maximum(item_size(x), 1) <= self._typical_nll[quantile]

    def item_size(self, x: np.ndarray) -> np.ndarray:
        return item_size(x)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or not 1 <= x.shape[1] <= self.max_len:
            raise ValueError(f"rows must have shape (n, L) with L <= {self.max_len}, got {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return x.astype(np.int64, copy=False)


def _zipf(k: int, exponent: float) -> np.ndarray:
    w = np.arange(1, k + 1, dtype=float) ** -exponent
    return w / w.sum()


# --------------------------------------------------------------------------- local text
class TextCorpus:
    """Byte-level blocks of local text, held-out split by document.

    ``path`` is a file, a directory (every non-hidden file below it), a glob, or
    ``builtin:NAME`` for ``sweep/problems/corpus/NAME.txt``. Documents are the files, or the
    paragraphs (split on blank lines) when there is one file. Byte b is token b (text never
    holds byte 0, which is EOS); ``vocab_size`` is 256. Each document is cut into
    non-overlapping blocks of ``block_size`` bytes (the remainder is dropped), so blocks hold
    no EOS. With a single document, its last ``test_fraction`` of blocks is held out.
    """

    vocab_size = 256

    def __init__(self, path: str | Path, *, block_size: int = 64, test_fraction: float = 0.1,
                 seed: int = 0) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if not 0 < test_fraction < 1:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        self.block_size = block_size
        files = resolve_files(path)
        docs = _documents(files)
        if not docs:
            raise ValueError(f"text corpus {str(path)!r} is empty")
        usable = [d for d in docs if len(d) >= block_size]
        if not usable:
            longest = max(len(d) for d in docs)
            raise ValueError(f"block_size {block_size} is longer than every document in {str(path)!r} "
                             f"(longest: {longest} bytes)")
        self.documents = len(usable)
        if len(usable) == 1:
            blocks = self._blocks(usable)
            n_test = max(1, round(test_fraction * len(blocks)))
            if n_test >= len(blocks):
                raise ValueError(f"{str(path)!r} yields {len(blocks)} block(s) of {block_size} bytes; "
                                 "need at least 2 to hold out a test split")
            self._train, self._test = blocks[:-n_test], blocks[-n_test:]
        else:
            order = np.random.default_rng(seed).permutation(len(usable))
            n_test = max(1, round(test_fraction * len(usable)))
            self._test = self._blocks([usable[i] for i in np.sort(order[:n_test])])
            self._train = self._blocks([usable[i] for i in np.sort(order[n_test:])])

    def _blocks(self, docs: list[bytes]) -> np.ndarray:
        rows = []
        for doc in docs:
            n = len(doc) // self.block_size
            arr = np.frombuffer(doc[: n * self.block_size], dtype=np.uint8)
            rows.append(arr.reshape(n, self.block_size))
        return np.concatenate(rows).astype(np.int64)

    def train_blocks(self) -> np.ndarray:
        return self._train.copy()

    def test_blocks(self) -> np.ndarray:
        return self._test.copy()

    def sample_real(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n training blocks drawn at random (without replacement while there are enough)."""
        idx = rng.choice(len(self._train), size=n, replace=n > len(self._train))
        return self._train[idx].copy()

    def item_size(self, x: np.ndarray) -> np.ndarray:
        return item_size(x)


def resolve_files(path: str | Path) -> list[Path]:
    """The files behind a path, directory, glob or ``builtin:NAME`` (sorted, deterministic)."""
    text = str(path)
    if text.startswith("builtin:"):
        p = BUILTIN_DIR / f"{text.removeprefix('builtin:')}.txt"
        if not p.is_file():
            names = ", ".join(sorted(f"builtin:{q.stem}" for q in BUILTIN_DIR.glob("*.txt")))
            raise ValueError(f"text corpus {text!r} not found (built in: {names})")
        return [p]
    p = Path(text).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        files = [q for q in sorted(p.rglob("*"))
                 if q.is_file() and not any(part.startswith(".") for part in q.relative_to(p).parts)]
    else:
        files = [Path(q) for q in sorted(glob.glob(text, recursive=True)) if Path(q).is_file()]
        if not files and not glob.has_magic(text):
            raise ValueError(f"text corpus path not found: {text!r}")
    if not files:
        raise ValueError(f"text corpus {text!r} matches no files")
    return files


def _documents(files: list[Path]) -> list[bytes]:
    # Byte 0 would read as EOS; text has none, but a stray binary file must not corrupt rows.
    raw = [f.read_bytes().replace(b"\x00", b"") for f in files]
    if len(raw) == 1:
        raw = re.split(rb"\n[ \t\r]*\n", raw[0])
    return [d.strip() for d in raw if d.strip()]


def decode(rows: np.ndarray) -> list[str]:
    """Byte-level rows back to text (up to the first EOS), for logs and reports."""
    mask = counted_mask(np.asarray(rows))
    return [bytes(int(t) for t, keep in zip(row, m, strict=True) if keep and t != EOS)
            .decode("utf-8", errors="replace") for row, m in zip(rows, mask, strict=True)]
