"""Overlapping token windows for texts longer than a model's window.

Windows are cut on the tokenizer's character offsets, so each window is an exact substring
of the text and re-tokenizes to (nearly) the same tokens.
"""

from collections.abc import Sequence


def window_count(token_count: int, window: int, overlap: int) -> int:
    if token_count <= window:
        return 1
    stride = window - overlap
    return -(-(token_count - window) // stride) + 1


def split_windows(text: str, spans: Sequence[tuple[int, int]], window: int, overlap: int) -> list[str]:
    """`text` cut into windows of at most `window` tokens, each overlapping the previous by `overlap`."""
    if len(spans) <= window:
        return [text]
    stride = window - overlap
    pieces = []
    for index in range(window_count(len(spans), window, overlap)):
        first = index * stride
        last = min(first + window, len(spans)) - 1
        pieces.append(text[spans[first][0] : spans[last][1]])
    return pieces
