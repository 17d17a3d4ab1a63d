import numpy as np
import pytest
import torch

from gpu_ops.batching import encode_with_backoff, token_budget_batches
from gpu_ops.windows import split_windows, window_count


def test_batches_respect_the_token_budget_and_cover_every_item_once():
    counts = [5, 300, 40, 40, 7, 120, 1, 250, 60, 60, 60]
    batches = token_budget_batches(counts, token_budget=400, max_items=4)
    assert sorted(i for batch in batches for i in batch) == list(range(len(counts)))
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or len(batch) * max(counts[i] for i in batch) <= 400
    # Sorted by length: each batch holds similar lengths, longest first.
    longest = [max(counts[i] for i in batch) for batch in batches]
    assert longest == sorted(longest, reverse=True)


def test_an_item_over_the_budget_still_gets_a_batch_of_its_own():
    assert token_budget_batches([1000, 3], token_budget=100, max_items=8) == [[0], [1]]


def _oom_above(limit):
    calls = []

    def encode(texts):
        calls.append(len(texts))
        if len(texts) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return np.array([[float(len(t))] for t in texts], dtype=np.float32)

    return encode, calls


def test_out_of_memory_halves_the_batch_until_it_fits_and_keeps_order():
    encode, calls = _oom_above(2)
    backoffs = []
    texts = [f"t{'x' * i}" for i in range(7)]
    vectors = encode_with_backoff(encode, texts, backoffs.append)
    assert vectors[:, 0].tolist() == [float(len(t)) for t in texts]
    assert calls[0] == 7 and max(c for c in calls if c <= 2) == 2
    assert backoffs[:2] == [3, 1]


def test_out_of_memory_on_a_single_item_and_other_errors_are_raised():
    encode, _ = _oom_above(0)
    with pytest.raises(torch.OutOfMemoryError):
        encode_with_backoff(encode, ["one"])

    def broken(texts):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        encode_with_backoff(broken, ["a", "b"])


def test_windows_overlap_and_cover_the_text():
    text = " ".join(f"w{i}" for i in range(10))
    spans = []
    position = 0
    for word in text.split(" "):
        spans.append((position, position + len(word)))
        position += len(word) + 1
    assert split_windows(text, spans, window=20, overlap=2) == [text]
    pieces = split_windows(text, spans, window=4, overlap=1)
    assert pieces == ["w0 w1 w2 w3", "w3 w4 w5 w6", "w6 w7 w8 w9"]
    assert window_count(10, 4, 1) == len(pieces)
    assert window_count(11, 4, 1) == 4 and window_count(4, 4, 1) == 1
