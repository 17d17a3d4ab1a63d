"""A sentence-transformers model on this machine, run by torch under the shared batching policy."""

from pathlib import Path

import numpy as np
import torch

from gpu_ops.registry import ModelSpec
from gpu_ops.text_encoder import TokenizedTextEncoder


class SentenceTransformerEncoder(TokenizedTextEncoder):
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
        self.tokenizer = self.model.tokenizer

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
