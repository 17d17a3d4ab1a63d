"""What every local text model shares: its Hugging Face tokenizer sets tokens, windows and lengths.

The same weights run by torch, ONNX Runtime or a static lookup table cut a text into the same
windows, so their tables hold the same rows and only the vectors differ.
"""

from abc import abstractmethod

import numpy as np

from gpu_ops.encoder import SPECIAL_TOKENS, EncodedBatch
from gpu_ops.local_encoder import LocalEncoder


class TokenizedTextEncoder(LocalEncoder):
    """A local text model: `tokenizer` is a Hugging Face fast tokenizer, `_encode_batch` runs the model."""

    tokenizer: object

    @abstractmethod
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """float32 vectors of one batch of texts, normalized when the spec says so."""

    def _as_output(self, vectors) -> np.ndarray:
        """float32 vectors, scaled to unit norm in float32 when the spec normalizes (a runtime's own output may be
        float16, whose rounding would leave norms off by 1e-4)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if self.spec.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens, without special tokens and without truncation."""
        encoded = self.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [list(map(tuple, spans)) for spans in encoded["offset_mapping"]]

    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        """Vectors of `texts` in their order; `token_counts` (content tokens) spare a tokenizer pass."""
        if token_counts is None:
            token_counts = [len(spans) for spans in self.token_spans(texts)]
        lengths = [min(count + SPECIAL_TOKENS, self.spec.max_tokens) for count in token_counts]
        return self._encode_in_batches(self._encode_batch, texts, lengths, sum(lengths))
