"""Encoders: one interface over every model backend, with the shared batching policy.

The same code runs on CUDA (fp16 by default), Apple MPS and CPU; the device is chosen
automatically unless configured.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gpu_ops.batching import encode_with_backoff, token_budget_batches
from gpu_ops.registry import ModelSpec
from gpu_ops.windows import split_windows

SPECIAL_TOKENS = 2
# Tokens (items x longest) per forward pass, measured on the default model: small batches win
# on a CPU (cache-sized activations), large ones on a GPU (occupancy).
DEFAULT_TOKEN_BUDGETS = {"cpu": 4_096, "mps": 16_384, "cuda": 65_536}
DEFAULT_MAX_BATCH_ITEMS = {"cpu": 64, "mps": 256, "cuda": 512}


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class EncodedBatch:
    vectors: np.ndarray
    batches: int
    tokens: int
    # index -> (reason, detail) of inputs the model refused (a hosted provider's 4xx): their rows
    # hold no vector and the documents go to quarantine.
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)


class Encoder:
    """What every encoder shares: its version's spec, and how a text longer than its window is cut."""

    spec: ModelSpec

    def windows(self, text: str, spans: list[tuple[int, int]]) -> list[str]:
        return split_windows(text, spans, self.spec.window_tokens, self.spec.window_overlap)


class LocalEncoder(Encoder):
    """What every model run on this machine shares: where it runs, its batch limits, its dtype and
    its out-of-memory backoffs, chosen by one policy."""

    def __init__(self, spec: ModelSpec, device: str, token_budget: int | None, max_batch_items: int | None):
        self.spec = spec
        self.device = resolve_device(device)
        kind = self.device.split(":")[0]
        self.token_budget = token_budget or DEFAULT_TOKEN_BUDGETS.get(kind, 4_096)
        self.max_batch_items = max_batch_items or DEFAULT_MAX_BATCH_ITEMS.get(kind, 64)
        half = spec.dtype == "float16" or (spec.dtype == "auto" and kind == "cuda")
        self.dtype = "float16" if half else "float32"
        self.backoffs = 0

    def _count_backoff(self, _size: int) -> None:
        self.backoffs += 1

    def _encode_in_batches(self, encode_batch, items: list, costs: list[int], tokens: int) -> EncodedBatch:
        """`items` through `encode_batch` in token-budget batches by `costs` (halved on out-of-memory),
        their vectors back in the items' order."""
        batches = token_budget_batches(costs, self.token_budget, self.max_batch_items)
        encoded = [
            (batch, encode_with_backoff(encode_batch, [items[i] for i in batch], self._count_backoff))
            for batch in batches
        ]
        # The model's own output width, which validation compares with the registry's dim.
        dim = encoded[0][1].shape[1] if encoded else self.spec.dim
        vectors = np.empty((len(items), dim), dtype=np.float32)
        for batch, batch_vectors in encoded:
            vectors[batch] = batch_vectors
        return EncodedBatch(vectors, len(batches), tokens)


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


def load_encoder(
    spec: ModelSpec,
    cache_dir: Path,
    device: str = "auto",
    token_budget: int | None = None,
    max_batch_items: int | None = None,
):
    if spec.backend == "sentence-transformers":
        return SentenceTransformerEncoder(spec, cache_dir, device, token_budget, max_batch_items)
    if spec.backend == "open_clip":
        from gpu_ops.clip_encoder import OpenClipEncoder

        return OpenClipEncoder(spec, cache_dir, device, token_budget, max_batch_items)
    if spec.backend == "openai":
        from gpu_ops.hosted_encoder import HostedEncoder

        return HostedEncoder(spec)
    raise ValueError(f"model {spec.key}: no encoder for backend {spec.backend!r}")
