"""The benchmark workload, shared by the dstream side and the PySpark peer (numpy only, no engine).

Each batch is ``lines`` lines of ``words_per_line`` words drawn from a ``vocab``-word vocabulary with
Zipf-like weights (word i has weight 1/(i+1)), from a generator seeded with the batch's seed, so both
sides of a comparison see the same words in the same order.
"""
from __future__ import annotations

import numpy as np

VOCAB = 10_000
WORDS_PER_LINE = 10


def vocabulary(size: int = VOCAB) -> list[str]:
    """The words: ``w0``, ``w1``, ... (word i is drawn with weight 1/(i+1))."""
    return [f"w{i}" for i in range(size)]


def word_indices(seed: int, lines: int, words_per_line: int = WORDS_PER_LINE, vocab: int = VOCAB) -> np.ndarray:
    """A ``lines x words_per_line`` array of word indices, drawn by inverse CDF from a seeded generator."""
    weights = 1.0 / np.arange(1, vocab + 1)
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    u = np.random.default_rng(seed).random(lines * words_per_line)
    idx = np.searchsorted(cdf, u, side="right")
    np.minimum(idx, vocab - 1, out=idx)
    return idx.reshape(lines, words_per_line)


def batch_lines(seed: int, lines: int) -> list[str]:
    """The lines of one batch as Python strings."""
    words = np.array(vocabulary(), dtype=object)
    return [" ".join(row) for row in words[word_indices(seed, lines)]]


def expected_counts(seed: int, lines: int) -> tuple[int, int, int]:
    """(distinct words, total words, count of word 0) of one batch: the check both sides must match."""
    counts = np.bincount(word_indices(seed, lines).ravel(), minlength=VOCAB)
    return int((counts > 0).sum()), int(counts.sum()), int(counts[0])


def batch_seed(i: int) -> int:
    return 1000 + i
