"""The interface every encoder implements, whatever runs the model (a local torch model, a provider).

Backends import this module; nothing here imports a backend, so `loading.load_encoder` is the one
place that picks one.
"""

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gpu_ops.registry import ModelSpec
from gpu_ops.windows import split_windows

# [CLS] and [SEP] (or CLIP's start and end): tokens a model window holds besides the text's.
SPECIAL_TOKENS = 2


@dataclass
class EncodedBatch:
    vectors: np.ndarray
    batches: int
    tokens: int
    # index -> (reason, detail) of inputs the model refused (a hosted provider's 4xx): their rows
    # hold no vector and the documents go to quarantine.
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)


class Encoder(ABC):
    """One model version's encoder: tokens, windows, vectors, and what its calls cost."""

    spec: ModelSpec
    # Where the model runs ("cpu", "cuda:0", "hosted") and in which precision.
    device: str
    dtype: str

    @abstractmethod
    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character spans of each text's tokens, without special tokens and without truncation."""

    @abstractmethod
    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        """Vectors of `texts` in their order; `token_counts` (content tokens) spare a tokenizer pass."""

    def encode_images(self, images: Iterable) -> EncodedBatch:
        """Vectors of images (RGB, upright) in their order; only multimodal models embed images."""
        raise TypeError(f"model {self.spec.key} embeds texts only ({self.spec.backend})")

    @abstractmethod
    def metadata(self) -> dict:
        """What a materialization shows of this encoder's work: device, backoffs, requests, cost."""

    def windows(self, text: str, spans: list[tuple[int, int]]) -> list[str]:
        return split_windows(text, spans, self.spec.window_tokens, self.spec.window_overlap)
