"""Row 7: row 1 on a GPU in fp32 and fp16, with the quality delta; only where CUDA is present."""

from pathlib import Path

import numpy as np
import torch

from benchmarks.corpora import distinct_texts, stdlib_records
from benchmarks.deployment import DEFAULT_VERSION, Stopwatch
from benchmarks.table import Row, verdict
from gpu_ops.loading import load_encoder
from gpu_ops.registry import load_registry


def run(work: Path, cache_dir: Path, documents: int) -> list[Row]:
    if not torch.cuda.is_available():
        return [
            Row(
                "7. GPU fp16 vs fp32",
                "not measured",
                "—",
                None,
                "fp16 faster, cosine ≈ 1",
                "—",
                "no GPU on this machine",
            )
        ]
    spec = load_registry(Path(__file__).resolve().parents[1] / "models.yaml").spec(DEFAULT_VERSION)
    texts = distinct_texts(stdlib_records(cache_dir), documents)
    results = {}
    for dtype in ("float32", "float16"):
        encoder = load_encoder(spec.model_copy(update={"dtype": dtype}), cache_dir, "cuda")
        encoder.encode_texts(texts[:256])
        torch.cuda.synchronize()
        with Stopwatch() as watch:
            vectors = encoder.encode_texts(texts).vectors
            torch.cuda.synchronize()
        results[dtype] = (len(texts) / watch.seconds, vectors)
    cosine = float(np.mean(np.sum(results["float32"][1] * results["float16"][1], axis=1)))
    ratio = results["float16"][0] / results["float32"][0]
    return [
        Row(
            "7. GPU fp16 vs fp32",
            f"{results['float16'][0]:,.0f} docs/s fp16",
            f"{results['float32'][0]:,.0f} docs/s fp32",
            ratio,
            "fp16 faster, cosine ≈ 1",
            verdict(ratio > 1 and cosine > 0.999),
            f"{torch.cuda.get_device_name()}; mean cosine fp16 to fp32 {cosine:.5f}; {len(texts):,} docs",
        )
    ]
