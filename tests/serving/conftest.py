import shutil

import pytest
from dagster import instance_for_test

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.definitions import build_definitions
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, write_jsonl


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, sample_records, cache_dir):
    """The whole pipeline run over 80 real documents, with a registry of its own that a test may edit."""
    root = tmp_path_factory.mktemp("serving")
    registry_path = root / "models.yaml"
    shutil.copy(MODELS_YAML, registry_path)
    corpus = write_jsonl(root / "corpus.jsonl", sample_records[:80])
    resources = make_resources(str(corpus), str(root / "lance"), cache_dir, registry_path)
    defs = build_definitions(resources)
    with instance_for_test() as instance:
        assert run_pipeline(defs, instance, say=lambda _: None).live_version == DEFAULT_VERSION
        yield {"root": root, "defs": defs, "instance": instance, "resources": resources, "registry": registry_path}
