from embedding_assets.core import reembedding_count
from embedding_assets.core.reembedding_count import _token_counts


class _WordTokenizer:
    """Token spans of whitespace-separated words; records how many characters each call tokenized."""

    def __init__(self):
        self.calls: list[int] = []

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        self.calls.append(sum(map(len, texts)))
        spans = []
        for text in texts:
            start, found = 0, []
            for word in text.split():
                start = text.index(word, start)
                found.append((start, start + len(word)))
                start += len(word)
            spans.append(found)
        return spans


def test_token_counts_tokenize_a_bounded_number_of_characters_at_once(monkeypatch):
    monkeypatch.setattr(reembedding_count, "TOKENIZE_CHARS", 100)
    texts = [" ".join(["word"] * n) for n in (3, 40, 2, 60, 1)]
    encoder = _WordTokenizer()
    assert _token_counts(encoder, texts) == [3, 40, 2, 60, 1]
    # Each call stops at the first text that reaches the budget: never more than one long text past it.
    assert len(encoder.calls) == 3 and max(encoder.calls) < 100 + max(map(len, texts))
