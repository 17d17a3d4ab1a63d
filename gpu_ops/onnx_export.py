"""A sentence-transformers model exported to ONNX on this machine, in float32 or dynamically quantized int8.

The export runs locally from the model's own folder (never a hub): torch traces the whole
sentence-transformers pipeline (transformer, pooling, any dense layer), so ONNX Runtime returns the
sentence vector itself. optimum is not used: its releases pin transformers below the version the
rest of the project needs, and torch's exporter plus onnxruntime's quantizer do the same two steps.

int8 is dynamic quantization of the weights (activations are quantized per batch at run time). The
right settings depend on the CPU's integer instructions, so they are detected once per export:
- avx512_vnni: signed 8-bit weights per channel (VNNI multiplies them without overflow);
- avx2 (and any x86 CPU without VNNI): the same with 7-bit weights (`reduce_range`), because AVX2's
  8-bit multiply-add saturates on full-range weights (measured here: mean cosine to float32 0.956
  without it, 0.992 with it);
- arm64: signed 8-bit weights per channel.
Each variant is exported into its own clean folder, and the one chosen is named in its folder and in
the encoder's metadata, so a version's provenance says which it ran.
"""

import platform
import warnings
from pathlib import Path

from gpu_ops.model_sources import build_once, derived_model_folder

MODEL_FILE = "model.onnx"
OPSET = 17
QUANTIZATION_SETTINGS = {
    "avx512_vnni": {"per_channel": True, "reduce_range": False},
    "avx2": {"per_channel": True, "reduce_range": True},
    "arm64": {"per_channel": True, "reduce_range": False},
}


def cpu_quantization_target() -> str:
    """Which of QUANTIZATION_SETTINGS fits this CPU (see the module docstring)."""
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        flags = []
    return "avx512_vnni" if {"avx512_vnni", "avx512vnni"} & set(flags) else "avx2"


def _export_float32(source_folder: str, target: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(source_folder, device="cpu").eval()
    names = list(model.tokenizer.model_input_names)

    class SentenceVectors(torch.nn.Module):
        """The pipeline as a function of the tokenizer's tensors, the shape torch's exporter traces."""

        def __init__(self):
            super().__init__()
            self.pipeline = model

        def forward(self, *tensors):
            return self.pipeline(dict(zip(names, tensors)))["sentence_embedding"]

    example = model.tokenizer(["an example", "a longer example sentence"], padding=True, return_tensors="pt")
    target.mkdir(parents=True)
    # The tracer warns of the shape tests it freezes (a mask as long as the input, no causal mask): true of
    # every batch the tokenizer pads.
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SentenceVectors(),
            tuple(example[name] for name in names),
            str(target / MODEL_FILE),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**{name: {0: "batch", 1: "tokens"} for name in names}, "sentence_embedding": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def exported_model(source_folder: str, cache_dir: Path, quantization: str | None) -> tuple[Path, str]:
    """(the ONNX file, what it is) for the sentence-transformers model in `source_folder`, exported once."""
    exports = derived_model_folder(cache_dir, "onnx", source_folder)
    float32 = build_once(
        exports / "float32",
        lambda target: _export_float32(source_folder, target),
        MODEL_FILE,
    )
    if quantization is None:
        return float32 / MODEL_FILE, "float32"
    target_cpu = cpu_quantization_target()
    settings = QUANTIZATION_SETTINGS[target_cpu]

    def quantize(target: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target.mkdir(parents=True)
        quantize_dynamic(float32 / MODEL_FILE, target / MODEL_FILE, weight_type=QuantType.QInt8, **settings)

    quantized = build_once(exports / f"{quantization}-{target_cpu}", quantize, MODEL_FILE)
    described = ", ".join(f"{name} {value}" for name, value in settings.items())
    return quantized / MODEL_FILE, f"{quantization} for {target_cpu} (signed weights, {described})"
