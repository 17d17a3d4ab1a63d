"""An int8 ONNX version of the live MiniLM, through the whole pipeline: its fidelity to the torch vectors is
measured, it goes live only through the recall gate every version passes, and the serving API embeds with it."""

import shutil
import time

import httpx
import numpy as np
import pytest
import yaml
from dagster import instance_for_test

from embedding_assets.cli.manage import register
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias
from embedding_assets.core.store import LanceStore
from embedding_assets.definitions import build_definitions
from gpu_ops.loading import load_encoder
from gpu_ops.onnx_encoder import OnnxEncoder
from serving.app import create_app
from serving.settings import ServingSettings
from tests.builders import DEFAULT_VERSION, MODELS_YAML, make_resources, stable_sample, write_jsonl
from tests.serving.serving_server import RunningServer, wait_ready

INT8_VERSION = "minilm-l6-int8-v1"


def _int8_entry() -> dict:
    [entry] = yaml.safe_load(open("models-cpu.yaml", encoding="utf-8"))["versions"]
    assert entry["key"] == INT8_VERSION and entry["fidelity_reference"] == DEFAULT_VERSION
    return entry


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, stdlib_table, cache_dir):
    """MiniLM (torch) live over 90 documents of the Python docs, then the int8 version registered beside it and
    embedded under a policy no candidate can pass (it must beat live recall by a whole point)."""
    root = tmp_path_factory.mktemp("fast-versions")
    rows = [row for row in stdlib_table.to_pylist() if row["id"].startswith("py:") and 80 <= len(row["text"]) <= 1500]
    corpus = write_jsonl(
        root / "corpus.jsonl", [{k: r[k] for k in ("id", "title", "text")} for r in stable_sample(rows, 90)]
    )
    registry = root / "models.yaml"
    shutil.copy(MODELS_YAML, registry)
    resources = make_resources(str(corpus), str(root / "lance"), cache_dir, registry)
    with instance_for_test() as instance, pytest.MonkeyPatch.context() as env:
        assert run_pipeline(build_definitions(resources), instance, say=lambda _: None).live_version == DEFAULT_VERSION
        register(str(registry), _int8_entry())
        env.setenv("RECALL_TOLERANCE", "-1.0")
        strict = build_definitions(make_resources(str(corpus), str(root / "lance"), cache_dir, registry))
        report = run_pipeline(strict, instance, say=lambda _: None)
        yield {"resources": resources, "instance": instance, "report": report, "store": LanceStore(str(root / "lance"))}


def _checks(report, version: str) -> dict:
    return {check.name: check for check in report.checks if check.model_version == version}


def test_the_int8_version_reports_its_fidelity_to_the_torch_vectors(deployment):
    fidelity = _checks(deployment["report"], INT8_VERSION)["vector_fidelity_check"]
    assert fidelity.passed and "to minilm-l6-v1" in fidelity.description, fidelity.description
    mean_cosine = float(fidelity.description.split("mean cosine ")[1].split()[0])
    assert mean_cosine >= 0.98
    assert _checks(deployment["report"], DEFAULT_VERSION)["vector_fidelity_check"].description.startswith("no ")


def test_a_quantized_version_is_promoted_only_when_its_recall_passes_the_gate(deployment):
    report, store = deployment["report"], deployment["store"]
    checks = _checks(report, INT8_VERSION)
    # Complete and sane, but the same recall gate as any candidate refused it: live stays on torch.
    assert all(
        checks[name].passed for name in ("count_parity_check", "vector_sanity_check", "single_model_version_check")
    )
    assert (
        not checks["eval_recall_check"].passed
        and "below the tolerance of -1.0" in checks["eval_recall_check"].description
    )
    assert report.live_version == current_alias(store).model_version == DEFAULT_VERSION
    # Under the default tolerance the same measured recall passes, and the int8 version goes live.
    job = build_definitions(deployment["resources"]).resolve_job_def("live_index_job")
    result = job.execute_in_process(instance=deployment["instance"], raise_on_error=False)
    decision = {k: v.value for k, v in result.asset_materializations_for_node("live_index")[0].metadata.items()}
    assert decision["decision"] == "promoted" and decision["candidate"] == INT8_VERSION, decision
    assert decision["candidate_recall_at_10"] >= decision["live_recall_at_10"] - 0.02
    assert current_alias(store).model_version == INT8_VERSION


def test_the_serving_api_embeds_with_the_int8_version(deployment, cache_dir):
    settings = ServingSettings(servable_versions=(INT8_VERSION,), batch_window_ms=5)
    with RunningServer(create_app(settings, deployment["resources"])) as server:
        wait_ready(server.url)
        texts = ["How do I parse a JSON string?", "Return the radix in which the Decimal class does arithmetic."]
        for _ in range(300):
            response = httpx.post(
                f"{server.url}/v1/embeddings", json={"model": INT8_VERSION, "input": texts}, timeout=60
            )
            if response.status_code != 503:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        served = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    encoder = load_encoder(deployment["resources"]["model_registry"].spec(INT8_VERSION), cache_dir)
    assert isinstance(encoder, OnnxEncoder) and encoder.dtype == "int8"
    assert np.allclose(served, encoder.encode_texts(texts).vectors, atol=1e-5)
