"""Row 12: docs/s of the `embeddings` step per runtime of MiniLM (torch fp32, ONNX Runtime fp32 and int8, a
static model2vec distillation), each against raw `SentenceTransformer.encode` and raw ONNX Runtime calls on
the same texts in the same run, with recall@10, agreement with torch fp32's neighbours and mean cosine to torch fp32.

Every side embeds the same distinct texts (near duplicates removed, as in row 1). The raw ONNX baseline
is the exported model called on length-sorted batches of 32, as `SentenceTransformer.encode` batches.
Exports and the distillation are built before timing (they happen once per machine); model loading
is timed, as in row 1. 200 queries are the first ten words of 200 of the texts, each runtime searching
its own vectors exactly: recall@10 is the share of queries whose own text is among the 10 nearest
documents (known-item retrieval, the quality the int8 goal compares with torch's); agreement@10 is the
share of torch fp32's 10 nearest documents that a runtime finds for the same query (stricter: two
equally good rankings disagree on near ties).
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from sentence_transformers import SentenceTransformer

from benchmarks.corpora import distinct_texts, one_shard_records, stdlib_records, write_jsonl
from benchmarks.deployment import DEFAULT_VERSION, MODELS_YAML, Stopwatch, temporary_deployment
from benchmarks.pipeline_overhead import without_near_duplicates
from benchmarks.table import Row, verdict
from embedding_assets.core.store import fixed_size_lists, scan
from gpu_ops.loading import load_encoder
from gpu_ops.registry import load_registry
from resources.deployments import PROJECT_ROOT

RAW_BATCH = 32
QUERIES = 200
# Each runtime as registry settings over models.yaml's MiniLM entry.
RUNTIMES = {
    DEFAULT_VERSION: ("torch fp32", {}),
    "minilm-l6-onnx-v1": ("ONNX fp32", {"runtime": "onnx"}),
    "minilm-l6-int8-v1": ("ONNX int8", {"runtime": "onnx", "quantization": "int8"}),
    "minilm-static-256-v1": ("static (model2vec, 256-d)", {"backend": "model2vec", "pca_dims": 256, "dim": 256}),
}


def demo_against_raw_torch(work: Path, cache_dir: Path) -> Row:
    """`make demo` with `models-cpu.yaml` (MiniLM int8 on ONNX Runtime) end to end on the embedded corpus, in a
    fresh store and instance, against raw `SentenceTransformer.encode` of every document's text: what a
    hand-rolled script does to embed the same corpus, without dedup, checks, index or promotion."""
    env = {
        **os.environ,
        "MODEL_REGISTRY": str(PROJECT_ROOT / "models-cpu.yaml"),
        "EMBEDDINGS_URI": str(work / "demo" / "lance"),
        "DAGSTER_HOME": str(work / "demo"),
        "EMBEDDINGS_CACHE_DIR": str(cache_dir),
    }
    (work / "demo").mkdir(parents=True, exist_ok=True)
    (work / "demo" / "dagster.yaml").write_text((PROJECT_ROOT / "dagster.yaml").read_text())
    with Stopwatch() as demo:
        output = subprocess.run(
            [sys.executable, "-m", "embedding_assets.cli.demo"], env=env, check=True, capture_output=True, text=True
        ).stdout
    texts = [record["text"] for record in stdlib_records(cache_dir) if record["text"]]
    spec = load_registry(MODELS_YAML).specs[DEFAULT_VERSION]
    with Stopwatch() as raw:
        model = SentenceTransformer(spec.resolved_source(cache_dir), device="cpu")
        model.max_seq_length = spec.max_tokens
        model.encode(texts, batch_size=RAW_BATCH, normalize_embeddings=True)
    summary = [" ".join(line.split()) for line in output.splitlines() if line.strip().startswith(("model calls", "live "))]
    return Row(
        "12e. `make demo` with models-cpu.yaml, end to end",
        f"{demo.seconds:.1f} s ({'; '.join(summary)})",
        f"{raw.seconds:.1f} s (raw ST encode of all {len(texts):,} texts, torch, batch {RAW_BATCH}, model load included)",
        demo.seconds / raw.seconds,
        "faster than raw torch encoding of the same corpus",
        verdict(demo.seconds < raw.seconds),
        "fresh store and instance; corpus, dedup, embeddings, index, every check, promotion and Parquet export",
    )


def _registry(work: Path) -> Path:
    [minilm] = yaml.safe_load(MODELS_YAML.read_text())["versions"]
    entries = [{**minilm, "key": key, **settings} for key, (_, settings) in RUNTIMES.items()]
    path = work / "runtimes.yaml"
    path.write_text(yaml.safe_dump({"versions": entries}, sort_keys=False))
    return path


def _raw_docs_per_second(encode, texts: list[str]) -> float:
    ordered = sorted(texts, key=len)
    encode(ordered[:RAW_BATCH])
    with Stopwatch() as watch:
        for start in range(0, len(ordered), RAW_BATCH):
            encode(ordered[start : start + RAW_BATCH])
    return len(texts) / watch.seconds


def _nearest_documents(store, version: str, queries: np.ndarray) -> list[set[str]]:
    table = scan(store.open_embeddings_table(version), None, ["doc_id", "vector"])
    doc_ids = np.array(table.column("doc_id").to_pylist())
    scores = queries @ fixed_size_lists(table.column("vector")).T
    found = []
    for row in scores:
        ranked = dict.fromkeys(doc_ids[np.argsort(-row)[:50]])
        found.append(set(list(ranked)[:10]))
    return found


def _known_item_recall(found: list[set[str]], sources: list[dict]) -> float:
    """Share of the queries whose own document is among the 10 found."""
    return float(np.mean([source["id"] in nearest for nearest, source in zip(found, sources)]))


def _mean_cosine(store, version: str) -> float | None:
    vectors = {}
    for key in (DEFAULT_VERSION, version):
        table = scan(store.open_embeddings_table(key), None, ["id", "vector"])
        vectors[key] = dict(zip(table.column("id").to_pylist(), fixed_size_lists(table.column("vector"))))
    if version == DEFAULT_VERSION or RUNTIMES[version][1].get("dim"):
        return None
    shared = sorted(vectors[version].keys() & vectors[DEFAULT_VERSION].keys())
    a = np.stack([vectors[version][i] for i in shared])
    b = np.stack([vectors[DEFAULT_VERSION][i] for i in shared])
    return float(((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def run(work: Path, cache_dir: Path, documents: int) -> list[Row]:
    texts = without_near_duplicates(distinct_texts(stdlib_records(cache_dir), int(documents * 1.1)))[:documents]
    records = one_shard_records(texts)
    sources = records[:: max(1, len(texts) // QUERIES)][:QUERIES]
    queries = [" ".join(record["text"].split()[:10]) for record in sources]
    corpus = write_jsonl(work / "runtimes.jsonl", records)
    deployment, cleanup = temporary_deployment(corpus, cache_dir, _registry(work))
    try:
        registry = deployment.resources["model_registry"]
        specs = {key: registry.spec(key) for key in RUNTIMES}
        # Exports and the distillation, once, before any timing.
        encoders = {key: load_encoder(spec, cache_dir, "cpu") for key, spec in specs.items()}
        torch_model = SentenceTransformer(specs[DEFAULT_VERSION].resolved_source(cache_dir), device="cpu")
        torch_model.max_seq_length = specs[DEFAULT_VERSION].max_tokens
        raw_torch = _raw_docs_per_second(
            lambda batch: torch_model.encode(batch, batch_size=RAW_BATCH, normalize_embeddings=True), texts
        )
        raw_onnx = {
            key: _raw_docs_per_second(encoders[key]._encode_batch, texts)
            for key in ("minilm-l6-onnx-v1", "minilm-l6-int8-v1")
        }
        deployment.execute("corpus_job", "000")
        deployment.execute("dedup_job", "000")
        pipeline = {}
        for key in RUNTIMES:
            with Stopwatch() as watch:
                metadata = deployment.embed("000", key)
            assert metadata["model_calls"] == len(texts), metadata
            pipeline[key] = (len(texts) / watch.seconds, metadata)
        truth = _nearest_documents(
            deployment.store, DEFAULT_VERSION, encoders[DEFAULT_VERSION].encode_texts(queries).vectors
        )
        torch_recall = _known_item_recall(truth, sources)
        rows = []
        for key, (label, _) in RUNTIMES.items():
            found = _nearest_documents(deployment.store, key, encoders[key].encode_texts(queries).vectors)
            agreement = float(np.mean([len(f & t) / len(t) for f, t in zip(found, truth)]))
            recall = _known_item_recall(found, sources)
            cosine = _mean_cosine(deployment.store, key)
            docs_per_second, metadata = pipeline[key]
            ratio = docs_per_second / raw_torch
            raw = (
                f"; raw ONNX {raw_onnx[key]:.1f} docs/s (pipeline {docs_per_second / raw_onnx[key]:.2f}× of it)"
                if key in raw_onnx
                else ""
            )
            goal = "≥ 2.5× raw torch, recall@10 within 1 point" if key == "minilm-l6-int8-v1" else "reported"
            met = verdict(ratio >= 2.5 and recall >= torch_recall - 0.01) if key == "minilm-l6-int8-v1" else "—"
            rows.append(
                Row(
                    f"12. embeddings step, {label}",
                    f"{docs_per_second:.1f} docs/s; recall@10 {recall:.3f} (torch {torch_recall:.3f}); "
                    f"agreement@10 {agreement:.3f}; "
                    + (f"mean cosine {cosine:.4f}" if cosine is not None else "cosine n/a"),
                    f"{raw_torch:.1f} docs/s (raw ST encode, batch {RAW_BATCH})",
                    ratio,
                    goal,
                    met,
                    f"{len(texts):,} distinct docs, one shard; {metadata.get('runtime', metadata['device'])}{raw}",
                )
            )
        return rows
    finally:
        cleanup()
