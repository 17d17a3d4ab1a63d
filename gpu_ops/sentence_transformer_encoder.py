"""A sentence-transformers model on this machine, under the shared batching policy."""

from pathlib import Path

import numpy as np
import torch

from gpu_ops.encoder import SPECIAL_TOKENS, EncodedBatch
from gpu_ops.local_encoder import LocalEncoder
from gpu_ops.registry import ModelSpec


class SentenceTransformerEncoder(LocalEncoder):
    """A sentence-transformers model loaded from a local folder (or a hub name where a hub is reachable)."""

    def __init__(
        self,
        spec: ModelSpec,
        cache_dir: Path,
        device: str = "auto",
        token_budget: int | None = None,
        max_batch_items: int | None = None,
    ):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
        super().__init__(spec, device, token_budget, max_batch_items)
        self.model = SentenceTransformer(spec.resolved_source(cache_dir), device=self.device)
        self.model.max_seq_length = spec.max_tokens
        if self.dtype == "float16":
            self.model.half()

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens, without special tokens and without truncation."""
        encoded = self.model.tokenizer(
            texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False
        )
        return [list(map(tuple, spans)) for spans in encoded["offset_mapping"]]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=len(texts),
                normalize_embeddings=self.spec.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)

    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        """Vectors of `texts` in their order; `token_counts` (content tokens) spare a tokenizer pass."""
        if token_counts is None:
            token_counts = [len(spans) for spans in self.token_spans(texts)]
        lengths = [min(count + SPECIAL_TOKENS, self.spec.max_tokens) for count in token_counts]
        return self._encode_in_batches(self._encode_batch, texts, lengths, sum(lengths))
