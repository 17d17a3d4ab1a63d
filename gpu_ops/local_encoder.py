"""What every model run on this machine shares: where it runs, its batch limits, its dtype and
its out-of-memory backoffs, chosen by one policy.

The same code runs on CUDA (fp16 by default), Apple MPS and CPU; the device is chosen
automatically unless configured.
"""

import numpy as np
import torch

from gpu_ops.batching import encode_with_backoff, token_budget_batches
from gpu_ops.encoder import EncodedBatch, Encoder
from gpu_ops.registry import ModelSpec

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


class LocalEncoder(Encoder):
    """A model run on this machine, batched by the shared token-budget policy."""

    def __init__(self, spec: ModelSpec, device: str, token_budget: int | None, max_batch_items: int | None):
        self.spec = spec
        self.device = resolve_device(device)
        kind = self.device.split(":")[0]
        self.token_budget = token_budget or DEFAULT_TOKEN_BUDGETS.get(kind, 4_096)
        self.max_batch_items = max_batch_items or DEFAULT_MAX_BATCH_ITEMS.get(kind, 64)
        half = spec.dtype == "float16" or (spec.dtype == "auto" and kind == "cuda")
        self.dtype = "float16" if half else "float32"
        self.backoffs = 0

    def metadata(self) -> dict:
        return {"device": f"{self.device} ({self.dtype})", "oom_backoffs": self.backoffs}

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
