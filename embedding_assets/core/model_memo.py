"""Figures that depend only on a model version's weights and one input, computed once and kept.

A version's key and fingerprint name what shapes its output (an edit of any of it needs a new key),
so a figure kept under them is the one the model would give again: the gates of every change read
them back instead of encoding the evaluation queries or tokenizing the corpus again.
"""

from collections.abc import Callable, Iterable

import pyarrow as pa

from embedding_assets.core.schemas import FIXED_SCHEMAS
from embedding_assets.core.store import IN_LIST_SIZE, LanceStore, scan_in, upsert
from gpu_ops.registry import ModelSpec


def remembered(
    store: LanceStore,
    table_name: str,
    column: str,
    spec: ModelSpec,
    keys: Iterable[str],
    compute: Callable[[list[str]], dict],
) -> dict:
    """key -> value for each of `keys`: read from `table_name` (rows `id`, `column`, the id being
    "<model_version>:<fingerprint>:<key>") where kept, else `compute`d a bounded batch at a time and kept.
    `compute` leaves out the keys it has no value for."""
    prefix = f"{spec.key}:{spec.fingerprint()}:"
    table = store.table(table_name)
    wanted = set(keys)
    found = {}
    for part in scan_in(table, "id", [prefix + key for key in wanted], ["id", column]):
        ids, values = part.column("id").to_pylist(), part.column(column).to_pylist()
        found.update((row_id[len(prefix) :], value) for row_id, value in zip(ids, values))
    missing = sorted(wanted - found.keys())
    for start in range(0, len(missing), IN_LIST_SIZE):
        computed = compute(missing[start : start + IN_LIST_SIZE])
        rows = [{"id": prefix + key, column: value} for key, value in computed.items()]
        upsert(table, pa.Table.from_pylist(rows, schema=FIXED_SCHEMAS[table_name]), on="id")
        found.update(computed)
    return found
