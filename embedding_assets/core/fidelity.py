"""How close a version's vectors are to those of the version it declares as its reference.

A faster runtime of the same weights (ONNX Runtime, int8) should return nearly the same vectors as
the torch version: the mean cosine of the two tables' vectors for the same rows (same document,
window and content) says how much the runtime changed, before anyone promotes it. It informs; the
promotion gate stays recall on the evaluation set, as for any version.
"""

import numpy as np

from embedding_assets.core.ann_recall import sample_row_ids
from embedding_assets.core.index_checks import CheckOutcome
from embedding_assets.core.schemas import embeddings_table_name
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan_in
from gpu_ops.registry import ModelSpec

# Below this mean cosine the runtime changed the vectors more than int8 quantization should (0.99 measured).
MIN_MEAN_COSINE = 0.98
SAMPLE_SIZE = 1_000


def _vectors_by_row(table, ids: list[str]) -> dict[tuple[str, str], np.ndarray]:
    found = {}
    for part in scan_in(table, "id", ids, ["id", "content_hash", "vector"]):
        keys = zip(part.column("id").to_pylist(), part.column("content_hash").to_pylist())
        found.update(zip(keys, fixed_size_lists(part.column("vector"))))
    return found


def vector_fidelity(
    store: LanceStore,
    spec: ModelSpec,
    reference: ModelSpec | None,
    sample_size: int = SAMPLE_SIZE,
    minimum: float = MIN_MEAN_COSINE,
) -> CheckOutcome:
    """Mean cosine to `reference`'s vectors (the spec's fidelity_reference, None if not registered) on shared rows."""
    name = spec.fidelity_reference
    if name is None:
        return CheckOutcome(True, "no fidelity_reference declared: nothing to compare with", {"measured": False})
    if reference is None or not store.has_table(embeddings_table_name(name)):
        return CheckOutcome(True, f"not measured: {name} is not registered or has no table", {"measured": False})
    if reference.dim != spec.dim:
        return CheckOutcome(False, f"not comparable: dim {spec.dim} vs {name}'s {reference.dim}", {"measured": False})
    table = store.open_embeddings_table(spec.key)
    ids = sample_row_ids(table, sample_size)
    mine, theirs = _vectors_by_row(table, ids), _vectors_by_row(store.open_embeddings_table(name), ids)
    shared = sorted(mine.keys() & theirs.keys())
    if not shared:
        return CheckOutcome(True, f"not measured: no row shared with {name} yet", {"measured": False})
    a = np.stack([mine[key] for key in shared])
    b = np.stack([theirs[key] for key in shared])
    cosines = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    mean = float(cosines.mean())
    return CheckOutcome(
        mean >= minimum,
        f"mean cosine {mean:.4f} to {name} on {len(shared):,} shared rows (minimum {minimum})",
        {
            "measured": True,
            "fidelity_reference": name,
            "mean_cosine": mean,
            "min_cosine": float(cosines.min()),
            "shared_rows": len(shared),
            "minimum": minimum,
        },
    )
