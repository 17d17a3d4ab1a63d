"""The open_clip encoder: the small random CLIP built from its config in the repo, offline."""

from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from embedding_assets.core.images import open_image
from gpu_ops.loading import load_encoder
from gpu_ops.registry import parse_registry

COFFEE = Path(skimage.data.data_dir) / "coffee.png"


def _swatches(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (48 + 4 * i, 64), (20 * i, 120, 200 - 10 * i)) for i in range(count)]


def test_random_weights_are_the_same_on_every_load_and_leave_the_global_seed_alone(clip_spec, clip_encoder, cache_dir):
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    again = load_encoder(clip_spec, cache_dir, "cpu")
    assert torch.equal(torch.rand(3), expected_draw)
    texts = ["Chelsea the cat.", "Coffee cup."]
    assert np.array_equal(again.encode_texts(texts).vectors, clip_encoder.encode_texts(texts).vectors)
    assert np.array_equal(again.encode_images(_swatches(2)).vectors, clip_encoder.encode_images(_swatches(2)).vectors)
    other_seed = load_encoder(clip_spec.model_copy(update={"source": "random:1"}), cache_dir, "cpu")
    assert not np.allclose(other_seed.encode_texts(texts).vectors, clip_encoder.encode_texts(texts).vectors)


def test_image_vectors_use_open_clips_own_preprocessing_and_are_unit_norm(clip_encoder):
    image = open_image(COFFEE.read_bytes())
    encoded = clip_encoder.encode_images([image])
    with torch.inference_mode():
        reference = clip_encoder.model.encode_image(clip_encoder.preprocess(image)[None], normalize=True).numpy()
    assert encoded.vectors.shape == (1, 64) and encoded.vectors.dtype == np.float32
    assert np.allclose(encoded.vectors, reference, atol=1e-6)
    assert encoded.tokens == clip_encoder.image_tokens == 17  # 4 x 4 patches of 16 pixels, and the class token
    text = clip_encoder.encode_texts(["Coffee cup."]).vectors
    assert np.allclose(np.linalg.norm(np.vstack([encoded.vectors, text]), axis=1), 1.0, atol=1e-5)


def test_token_spans_count_the_tokens_clip_sees_and_windows_fit_its_context(clip_encoder, sample_records):
    texts = [record["text"] for record in sample_records[:80]]
    for text, spans in zip(texts, clip_encoder.token_spans(texts)):
        assert len(spans) == len(clip_encoder.tokenizer.encode(text))
        assert all(0 <= start < end <= len(text) for start, end in spans)
    long_text = " ".join(max(texts, key=len).split())
    spans = clip_encoder.token_spans([long_text])[0]
    windows = clip_encoder.windows(long_text, spans)
    assert len(spans) > clip_encoder.spec.window_tokens and len(windows) >= 2
    assert long_text.startswith(windows[0]) and long_text.endswith(windows[-1])
    for window in windows:
        assert len(clip_encoder.tokenizer.encode(window)) <= clip_encoder.spec.window_tokens


def test_texts_are_batched_by_the_padded_context_and_images_by_their_patches(clip_spec, cache_dir):
    # 77 tokens per text (the tokenizer pads to the context), 17 per image: 10 texts or 45 images per batch.
    encoder = load_encoder(clip_spec, cache_dir, "cpu", token_budget=770, max_batch_items=64)
    assert encoder.encode_texts([f"caption number {i}" for i in range(25)]).batches == 3
    assert encoder.encode_images(_swatches(50)).batches == 2


def test_image_batches_are_halved_on_out_of_memory(clip_spec, cache_dir):
    encoder = load_encoder(clip_spec, cache_dir, "cpu")
    images = _swatches(8)
    expected = encoder.encode_images(images).vectors
    real_encode = encoder._encode_image_batch

    def limited(pixels):
        if len(pixels) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_encode(pixels)

    encoder._encode_image_batch = limited
    assert np.allclose(encoder.encode_images(images).vectors, expected, atol=1e-6)
    assert encoder.backoffs == 3


def test_fp16_path_runs_on_cpu_and_stays_close_to_fp32(clip_spec, clip_encoder, cache_dir):
    half = load_encoder(clip_spec.model_copy(update={"dtype": "float16"}), cache_dir, "cpu")
    assert half.dtype == "float16" and half.model.visual.conv1.weight.dtype == torch.float16
    for encode in ("encode_texts", "encode_images"):
        inputs = ["Chelsea the cat.", "Greek coins from Pompeii."] if encode == "encode_texts" else _swatches(2)
        full, reduced = getattr(clip_encoder, encode)(inputs).vectors, getattr(half, encode)(inputs).vectors
        assert reduced.dtype == np.float32 and (full * reduced).sum(axis=1).min() > 0.99


def test_the_registry_and_the_loader_refuse_what_cannot_work(clip_spec, cache_dir):
    entry = {**clip_spec.model_dump(), "modality": "text"}
    assert "modality must be multimodal" in parse_registry({"versions": [entry]}).errors[0]
    renamed = clip_spec.model_copy(update={"model_id": "other-name"})
    with pytest.raises(ValueError, match="after its config file"):
        load_encoder(renamed, cache_dir, "cpu")
    too_long = clip_spec.model_copy(update={"max_tokens": 100})
    with pytest.raises(ValueError, match="exceeds the context of 77"):
        load_encoder(too_long, cache_dir, "cpu")
