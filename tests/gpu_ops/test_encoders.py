import numpy as np
import torch
from sentence_transformers import SentenceTransformer

from gpu_ops.loading import load_encoder
from gpu_ops.local_encoder import resolve_device


def test_device_is_chosen_automatically():
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert resolve_device("auto") == expected
    assert resolve_device("cpu") == "cpu"


def test_vectors_equal_sentence_transformers_on_real_text(minilm_encoder, minilm_spec, sample_records, cache_dir):
    texts = [record["text"] for record in sample_records[:48]]
    ours = minilm_encoder.encode_texts(texts)
    reference = SentenceTransformer(minilm_spec.resolved_source(cache_dir), device="cpu").encode(
        texts, batch_size=32, normalize_embeddings=True
    )
    assert ours.vectors.shape == (48, 384) and ours.vectors.dtype == np.float32
    assert np.allclose(ours.vectors, reference, atol=1e-5)
    assert ours.batches >= 1 and ours.tokens > 48


def test_long_text_is_cut_into_overlapping_windows_the_model_accepts(minilm_encoder, stdlib_table):
    text = " ".join(next(r["text"] for r in stdlib_table.to_pylist() if r["id"] == "topic:assert").split())
    spans = minilm_encoder.token_spans([text])[0]
    assert len(spans) > minilm_encoder.spec.window_tokens
    windows = minilm_encoder.windows(text, spans)
    assert len(windows) >= 2
    assert text.startswith(windows[0]) and text.endswith(windows[-1])
    for window in windows:
        assert len(minilm_encoder.token_spans([window])[0]) <= minilm_encoder.spec.window_tokens + 2


def test_fp16_path_runs_on_cpu_and_stays_close_to_fp32(minilm_spec, minilm_encoder, sample_records, cache_dir):
    half = load_encoder(minilm_spec.model_copy(update={"dtype": "float16"}), cache_dir, "cpu")
    assert half.dtype == "float16" and next(half.model.parameters()).dtype == torch.float16
    texts = [record["text"] for record in sample_records[:16]]
    full = minilm_encoder.encode_texts(texts).vectors
    reduced = half.encode_texts(texts).vectors
    assert reduced.dtype == np.float32
    cosine = (full * reduced).sum(axis=1) / (np.linalg.norm(full, axis=1) * np.linalg.norm(reduced, axis=1))
    assert cosine.min() > 0.99


def test_encoder_halves_batches_on_out_of_memory(minilm_spec, sample_records, cache_dir):
    encoder = load_encoder(minilm_spec, cache_dir, "cpu", token_budget=100_000, max_batch_items=64)
    real_encode = encoder._encode_batch

    def limited(texts):
        if len(texts) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_encode(texts)

    encoder._encode_batch = limited
    texts = [record["text"] for record in sample_records[:16]]
    vectors = encoder.encode_texts(texts).vectors
    assert encoder.backoffs >= 3
    assert np.allclose(vectors, real_encode(texts), atol=1e-5)
