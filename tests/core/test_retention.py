from datetime import datetime, timedelta, timezone

import pytest
import yaml

from embedding_assets.cli.manage import register
from embedding_assets.core.aliases import alias_history, current_alias, previous_version, switch_alias
from embedding_assets.core.retention import apply_retention
from gpu_ops.registry import parse_registry
from tests.builders import MODELS_YAML

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _registry(*keys: str):
    first = yaml.safe_load(MODELS_YAML.read_text())["versions"][0]
    return parse_registry({"versions": [{**first, "key": key} for key in keys]})


def _tables(store):
    return sorted(name.removeprefix("embeddings__") for name in store.table_names() if name.startswith("embeddings__"))


def test_alias_history_and_previous_version(store):
    for version in ("a", "b", "c"):
        store.embeddings_table(version, 4)
    assert previous_version(store) is None
    for step, version in enumerate(["a", "b", "b", "c"]):
        switch_alias(store, version, 1, "test", T0 + timedelta(minutes=step))
    assert current_alias(store).model_version == "c"
    assert [entry.model_version for entry in alias_history(store)] == ["c", "b", "b", "a"]
    assert previous_version(store) == "b"


def test_retention_keeps_live_previous_registered_and_the_newest_retired(store):
    for version in ("old-1", "old-2", "old-3", "prev", "live", "candidate"):
        store.embeddings_table(version, 4)
    switch_alias(store, "prev", 1, "test", T0)
    switch_alias(store, "live", 1, "test", T0 + timedelta(minutes=1))
    registry = _registry("live", "candidate")
    result = apply_retention(store, registry, keep=1)
    assert result.dropped == ["old-1", "old-2"]
    assert _tables(store) == ["candidate", "live", "old-3", "prev"]
    assert apply_retention(store, registry, keep=1).dropped == []
    assert apply_retention(store, _registry(), keep=0).dropped == ["candidate", "old-3"]
    assert _tables(store) == ["live", "prev"]


def test_retention_never_drops_a_version_the_registry_names_even_when_its_entry_is_invalid(store):
    for version in ("live", "minilm-typo", "2024", "retired"):
        store.embeddings_table(version, 4)
    switch_alias(store, "live", 1, "test", T0)
    first = yaml.safe_load(MODELS_YAML.read_text())["versions"][0]
    # A misspelled field, and a key YAML reads as a number: both entries are invalid, both name a version.
    registry = parse_registry({"versions": [{**first, "key": "minilm-typo", "dimm": 384}, {**first, "key": 2024}]})
    assert not registry.specs and registry.named_keys == {"minilm-typo", "2024"}
    assert apply_retention(store, registry, keep=0).dropped == ["retired"]
    assert _tables(store) == ["2024", "live", "minilm-typo"]


def test_retention_drops_nothing_while_an_entry_names_no_key(store):
    for version in ("live", "retired"):
        store.embeddings_table(version, 4)
    switch_alias(store, "live", 1, "test", T0)
    registry = parse_registry({"versions": [{"kye": "retired", "backend": "sentence-transformers"}]})
    assert registry.unnamed_entries == 1
    assert apply_retention(store, registry, keep=0).dropped == []
    assert apply_retention(store, parse_registry({"versions": "retired"}), keep=0).dropped == []
    assert _tables(store) == ["live", "retired"]


def test_register_appends_a_valid_entry_and_refuses_a_bad_one(tmp_path):
    registry = tmp_path / "models.yaml"
    registry.write_text(MODELS_YAML.read_text())
    first = yaml.safe_load(MODELS_YAML.read_text())["versions"][0]
    register(str(registry), {**first, "key": "minilm-l6-r2", "revision": "2", "max_tokens": 128})
    versions = yaml.safe_load(registry.read_text())["versions"]
    assert [v["key"] for v in versions] == ["minilm-l6-v1", "minilm-l6-r2"]
    assert "# The model registry" in registry.read_text()
    with pytest.raises(SystemExit, match="duplicate key"):
        register(str(registry), {**first, "revision": "3"})
    with pytest.raises(SystemExit, match="dim"):
        register(str(registry), {**first, "key": "broken", "dim": -1})
    assert len(yaml.safe_load(registry.read_text())["versions"]) == 2
