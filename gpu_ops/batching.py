"""The batching policy shared by every encoder: token-budget batches of similar length.

Padding makes a batch cost (items x longest item), so items are sorted by length and
packed until that product reaches the budget. On out-of-memory a batch is halved and
retried, down to single items, so one oversized batch never fails a whole run.
"""

from collections.abc import Callable, Sequence

import numpy as np
import torch


def token_budget_batches(token_counts: Sequence[int], token_budget: int, max_items: int) -> list[list[int]]:
    """Indices grouped so that len(batch) * max(tokens in batch) <= token_budget (a single item always fits)."""
    order = sorted(range(len(token_counts)), key=lambda i: (-token_counts[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        tokens = max(1, token_counts[index])
        candidate_longest = max(longest, tokens)
        if current and ((len(current) + 1) * candidate_longest > token_budget or len(current) == max_items):
            batches.append(current)
            current, candidate_longest = [], tokens
        current.append(index)
        longest = candidate_longest
    if current:
        batches.append(current)
    return batches


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def encode_with_backoff(
    encode: Callable[[list[str]], np.ndarray],
    texts: list[str],
    on_backoff: Callable[[int], None] = lambda size: None,
) -> np.ndarray:
    """encode(texts), halving the batch on out-of-memory until single items."""
    try:
        return encode(texts)
    except (RuntimeError, torch.OutOfMemoryError) as error:
        if not is_out_of_memory(error) or len(texts) == 1:
            raise
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    half = len(texts) // 2
    on_backoff(half)
    return np.concatenate(
        [encode_with_backoff(encode, texts[:half], on_backoff), encode_with_backoff(encode, texts[half:], on_backoff)]
    )
