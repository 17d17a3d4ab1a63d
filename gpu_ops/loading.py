"""The one place that picks an encoder for a model version's backend.

Backends are imported only when asked for: a deployment without open_clip or a provider key
loads the others. ONNX Runtime and static models run on the CPU whatever the device setting.
"""

from pathlib import Path

from gpu_ops.encoder import Encoder
from gpu_ops.registry import ModelSpec


def load_encoder(
    spec: ModelSpec,
    cache_dir: Path,
    device: str = "auto",
    token_budget: int | None = None,
    max_batch_items: int | None = None,
) -> Encoder:
    if spec.backend == "sentence-transformers" and spec.runtime == "onnx":
        from gpu_ops.onnx_encoder import OnnxEncoder

        return OnnxEncoder(spec, cache_dir, token_budget, max_batch_items)
    if spec.backend == "sentence-transformers":
        from gpu_ops.sentence_transformer_encoder import SentenceTransformerEncoder

        return SentenceTransformerEncoder(spec, cache_dir, device, token_budget, max_batch_items)
    if spec.backend == "open_clip":
        from gpu_ops.clip_encoder import OpenClipEncoder

        return OpenClipEncoder(spec, cache_dir, device, token_budget, max_batch_items)
    if spec.backend == "model2vec":
        from gpu_ops.static_encoder import StaticEncoder

        return StaticEncoder(spec, cache_dir, token_budget, max_batch_items)
    if spec.backend == "openai" and spec.batch_api:
        from gpu_ops.batch_api import BatchApiEncoder

        return BatchApiEncoder(spec)
    if spec.backend == "openai":
        from gpu_ops.hosted_encoder import HostedEncoder

        return HostedEncoder(spec)
    raise ValueError(f"model {spec.key}: no encoder for backend {spec.backend!r}")
