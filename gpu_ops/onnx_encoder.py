"""A sentence-transformers version run by ONNX Runtime on the CPU (`runtime: onnx` in the registry).

The model is exported once from the version's own source into the cache folder (float32, or int8
quantized for this CPU: see gpu_ops/onnx_export.py); its tokenizer is the model's own, so windows and
token counts are those of the torch runtime and only the vectors differ, within the fidelity the
vector_fidelity check measures.
"""

from pathlib import Path

import numpy as np

from gpu_ops.onnx_export import exported_model
from gpu_ops.registry import ModelSpec
from gpu_ops.text_encoder import TokenizedTextEncoder


class OnnxEncoder(TokenizedTextEncoder):
    """The exported pipeline in an ONNX Runtime session; the CPU build runs it, whatever the device setting."""

    def __init__(self, spec: ModelSpec, cache_dir: Path, token_budget: int | None, max_batch_items: int | None):
        import onnxruntime
        from transformers import AutoTokenizer

        super().__init__(spec, "cpu", token_budget, max_batch_items)
        source = spec.resolved_source(cache_dir)
        self.model_path, self.variant = exported_model(source, cache_dir, spec.quantization)
        self.dtype = spec.quantization or "float32"
        self.runtime = f"onnxruntime {onnxruntime.__version__}, {self.variant}"
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.session = onnxruntime.InferenceSession(
            str(self.model_path), _session_options(onnxruntime), providers=["CPUExecutionProvider"]
        )
        self.input_names = [node.name for node in self.session.get_inputs()]

    def metadata(self) -> dict:
        return {**super().metadata(), "runtime": self.runtime, "onnx_model": str(self.model_path)}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.spec.max_tokens, return_tensors="np"
        )
        inputs = {name: encoded[name].astype(np.int64) for name in self.input_names}
        return self._as_output(self.session.run(None, inputs)[0])


def _session_options(onnxruntime):
    """ONNX Runtime's worker threads spin between calls by default, burning the cores that the serving
    event loop, its clients and Dagster need; without spinning one short text's p99 fell from 14 to 6-8 ms
    beside a busy Python thread, at the same batch throughput (measured on this 2-core machine)."""
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
