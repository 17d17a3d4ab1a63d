"""Runs in separate processes open the same table while it is being created."""

import multiprocessing

from embedding_assets.core.store import LanceStore

PROCESSES = 6


def _open(uri, barrier, results):
    store = LanceStore(uri)
    barrier.wait()
    try:
        store.embeddings_table("race-v1", 8)
        results.put("ok")
    except Exception as error:  # noqa: BLE001 - the test reports what a losing process saw
        results.put(f"{type(error).__name__}: {error}")


def test_processes_creating_one_embeddings_table_at_once_all_get_it(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [context.Process(target=_open, args=(str(tmp_path), barrier, results)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join()
    assert outcomes == ["ok"] * PROCESSES
    assert LanceStore(str(tmp_path)).table_names() == ["embeddings__race-v1"]
