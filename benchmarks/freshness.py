"""Row 10: edit -> searchable and upsert -> searchable through the running daemon, as `make ui` runs it.

A store is built in-process, then `dagster dev` (webserver and daemon, sensors on) watches its JSONL
source. Each of `edits` edits rewrites one document's text with a new sentence; the clock runs from
the file's write until the live alias pins a table version whose row for that document carries the
new content (what the serving API and `make search` read). Then the serving API runs beside the
daemon and each of `upserts` new documents is POSTed to `/v1/documents`; the clock runs from the
request until `GET /v1/documents/{id}` answers `live` (served through the live pin). The sensor
interval, the run's launch, the change run and the gates are all inside both times.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import numpy as np
from dagster import DagsterInstance

from benchmarks.corpora import stdlib_records, write_jsonl
from benchmarks.deployment import free_port
from benchmarks.serving import start_server
from benchmarks.table import Row, verdict
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.core.aliases import current_alias, open_pinned
from embedding_assets.core.store import LanceStore, scan, sql_literal, versions_written_at
from embedding_assets.core.text import content_hash, normalize_text
from embedding_assets.definitions import build_definitions
from resources.deployments import PROJECT_ROOT, local_resources

GOAL_P50_S = 30.0
TIMEOUT_S = 300.0


def _searchable(store: LanceStore, doc_id: str, expected_hash: str) -> bool:
    alias = current_alias(store)
    if alias is None:
        return False
    rows = scan(open_pinned(store, alias), f"doc_id = {sql_literal(doc_id)}", ["content_hash"])
    return expected_hash in rows.column("content_hash").to_pylist()


def _wait(probe, what: str, started: float) -> float:
    """Seconds from `started` (the write, the request) until `probe()` holds."""
    while not probe():
        if time.monotonic() - started > TIMEOUT_S:
            raise RuntimeError(f"{what} not searchable after {TIMEOUT_S:.0f} s")
        time.sleep(0.25)
    seconds = time.monotonic() - started
    print(f"{what}: searchable after {seconds:.1f} s", flush=True)
    return seconds


def _is_live(status_url: str) -> bool:
    return httpx.get(status_url, timeout=30).json().get("status") == "live"


def _timed_upserts(work: Path, corpus: Path, cache_dir: Path, records: list[dict], upserts: int) -> list[float]:
    """POST each new document, then poll its status until the live pin serves it."""
    port = free_port()
    server = start_server(work, corpus, cache_dir, port, prefix=f"fresh-{port}")
    base = f"http://127.0.0.1:{port}"
    latencies = []
    try:
        for n in range(upserts):
            source = records[(n * 53 + 11) % len(records)]
            doc_id = f"fresh-upsert-{n}"
            body = {"id": doc_id, "title": source["title"], "text": f"{source['text']} Upsert probe {n}."}
            started = time.monotonic()
            assert httpx.post(f"{base}/v1/documents", json=body, timeout=30).status_code == 202
            latencies.append(_wait(partial(_is_live, f"{base}/v1/documents/{doc_id}"), f"upsert {n}", started))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return latencies


def run(work: Path, cache_dir: Path, documents: int, edits: int, upserts: int) -> list[Row]:
    records = stdlib_records(cache_dir)[: documents or None]
    corpus = write_jsonl(work / "fresh.jsonl", records)
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    lance = work / "lance"
    defs = build_definitions(local_resources(str(corpus), str(lance), cache_dir, device="cpu"))
    instance = DagsterInstance.from_config(str(home))
    run_pipeline(defs, instance, say=lambda _: None)
    store = LanceStore(str(lance))

    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CORPUS_URI": str(corpus),
        "EMBEDDINGS_URI": str(lance),
        "EMBEDDINGS_DATA_DIR": str(cache_dir.parent),
        "EMBEDDING_DEVICE": "cpu",
    }
    port = free_port()
    daemon = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    latencies, write_to_pin = [], []
    try:
        time.sleep(20)  # the webserver and the daemon start; the sensor's first tick records the fingerprint
        for n in range(edits):
            record = records[(n * 37) % len(records)]
            text = f"{record['text']} Freshness probe {n}: revised on {time.time():.0f}."
            records = [{**r, "text": text} if r["id"] == record["id"] else r for r in records]
            expected = content_hash(normalize_text(text))
            started = time.monotonic()
            write_jsonl(corpus, records)
            latencies.append(_wait(lambda: _searchable(store, record["id"], expected), f"edit {n}", started))
            pinned = current_alias(store)
            written = versions_written_at(open_pinned(store, pinned))[pinned.table_version]
            write_to_pin.append((pinned.switched_at - written).total_seconds())
        upserted = _timed_upserts(work, corpus, cache_dir, records, upserts)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
    p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
    u50, u95 = np.percentile(upserted, 50), np.percentile(upserted, 95)
    return [
        Row(
            f"10a. edit -> searchable ({edits} edits, daemon)",
            f"p50 {p50:.1f} s, p95 {p95:.1f} s",
            f"goal p50 {GOAL_P50_S:.0f} s",
            p50 / GOAL_P50_S,
            "p50 ≤ 30 s",
            verdict(p50 <= GOAL_P50_S),
            f"{len(records):,} documents; `dagster dev` daemon, sensor every 5 s, one apply_change_job run per "
            "edit (launch, corpus, dedup, embeddings, index, gates, pin); min "
            f"{min(latencies):.1f} s, max {max(latencies):.1f} s; from the change run's last write to the pin: p50 "
            f"{np.percentile(write_to_pin, 50):.1f} s, max {max(write_to_pin):.1f} s",
        ),
        Row(
            f"10b. upsert -> searchable ({upserts} upserts, daemon)",
            f"p50 {u50:.1f} s, p95 {u95:.1f} s",
            f"goal p50 {GOAL_P50_S:.0f} s",
            u50 / GOAL_P50_S,
            "p50 ≤ 30 s",
            verdict(u50 <= GOAL_P50_S),
            "POST /v1/documents (a new document) until GET /v1/documents/{id} says live; the serving API "
            "and the daemon share the machine; the inbox write, sensor tick, change run, gates and pin included; "
            f"min {min(upserted):.1f} s, max {max(upserted):.1f} s",
        ),
    ]
