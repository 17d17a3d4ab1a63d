"""The same MiniLM weights on ONNX Runtime (float32 and int8), and a static model distilled on this machine.

Everything loads offline (the session runs with HF_HUB_OFFLINE=1) from the packaged weights, and
what is exported or distilled lands in the cache folder, never in site-packages.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from gpu_ops.loading import load_encoder
from gpu_ops.onnx_encoder import OnnxEncoder
from gpu_ops.onnx_export import QUANTIZATION_SETTINGS, cpu_quantization_target
from gpu_ops.registry import ModelSpec
from gpu_ops.static_encoder import StaticEncoder


def _mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


@pytest.fixture(scope="module")
def texts(sample_records) -> list[str]:
    """50 real documents of the Python docs, of every length up to the model window."""
    return [record["text"] for record in sample_records[:50]]


@pytest.fixture(scope="module")
def onnx_encoders(minilm_spec, cache_dir) -> dict[str, OnnxEncoder]:
    return {
        name: load_encoder(minilm_spec.model_copy(update={"runtime": "onnx", "quantization": quantization}), cache_dir)
        for name, quantization in (("float32", None), ("int8", "int8"))
    }


def test_onnx_float32_and_int8_agree_with_torch_on_real_text(onnx_encoders, minilm_encoder, texts):
    torch_vectors = minilm_encoder.encode_texts(texts).vectors
    float32 = onnx_encoders["float32"].encode_texts(texts).vectors
    int8 = onnx_encoders["int8"].encode_texts(texts).vectors
    assert float32.shape == int8.shape == (50, 384) and float32.dtype == int8.dtype == np.float32
    # float32 is the same computation in another runtime; int8 measured 0.99 here.
    assert _mean_cosine(float32, torch_vectors) >= 0.999
    assert _mean_cosine(int8, torch_vectors) >= 0.98
    assert np.allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)


def test_onnx_cuts_the_same_windows_as_torch(onnx_encoders, minilm_encoder, texts):
    assert onnx_encoders["int8"].token_spans(texts) == minilm_encoder.token_spans(texts)


def test_each_variant_is_exported_once_into_its_own_folder_and_named_in_the_metadata(onnx_encoders, cache_dir):
    target = cpu_quantization_target()
    assert target in QUANTIZATION_SETTINGS
    float32, int8 = onnx_encoders["float32"], onnx_encoders["int8"]
    assert float32.model_path.parent.name == "float32" and int8.model_path.parent.name == f"int8-{target}"
    assert float32.model_path.parent.parent == int8.model_path.parent.parent
    assert str(int8.model_path).startswith(str(cache_dir / "models" / "onnx"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    metadata = int8.metadata()
    assert metadata["device"] == "cpu (int8)" and f"int8 for {target}" in metadata["runtime"]
    written = int8.model_path.stat().st_mtime_ns
    again = load_encoder(int8.spec, cache_dir)
    assert again.model_path == int8.model_path and again.model_path.stat().st_mtime_ns == written


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, minilm_spec, cache_dir) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer and seeded weights: a teacher distilled in seconds."""
    folder = tmp_path_factory.mktemp("teacher") / "tiny-bert"
    source = minilm_spec.resolved_source(cache_dir)
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("model.safetensors", "*.md", "data_config.json"))
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": 32}))
    return str(folder)


def _static_spec(teacher: str) -> ModelSpec:
    return ModelSpec(
        key="static-tiny-v1",
        backend="model2vec",
        model_id="tiny-bert-static",
        source=teacher,
        dim=16,
        pca_dims=16,
        max_tokens=512,
    )


def test_a_static_model_distilled_twice_gives_the_same_vectors_in_any_order(tiny_teacher, tmp_path, texts):
    first = load_encoder(_static_spec(tiny_teacher), tmp_path / "one")
    second = load_encoder(_static_spec(tiny_teacher), tmp_path / "two")
    assert isinstance(first, StaticEncoder) and first.model_path != second.model_path
    weights = [(encoder.model_path / "model.safetensors").read_bytes() for encoder in (first, second)]
    assert weights[0] == weights[1]
    vectors = first.encode_texts(texts).vectors
    assert vectors.shape == (50, 16) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors, second.encode_texts(texts).vectors)
    assert np.array_equal(vectors[::-1], first.encode_texts(texts[::-1]).vectors)
    assert "model2vec" in first.metadata()["runtime"]
