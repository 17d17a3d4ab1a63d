"""Which old version tables to drop.

Never the live or the previous version (rollback needs it), never a version still in the
registry (it may be a candidate being backfilled, or a rollback target); of the retired
rest, the `keep` most recently written stay. A dropped version's retained table (`core.retained`)
goes with it; `retained__*` tables are not versions (only EMBEDDINGS_TABLE_PREFIX names one).
"""

from dataclasses import dataclass

from embedding_assets.core.aliases import current_alias, previous_version
from embedding_assets.core.retained import drop_retained_table
from embedding_assets.core.schemas import EMBEDDINGS_TABLE_PREFIX, embeddings_table_name
from embedding_assets.core.store import LanceStore


@dataclass
class RetentionResult:
    kept: list[str]
    dropped: list[str]


def apply_retention(store: LanceStore, registered: set[str], keep: int) -> RetentionResult:
    versions = [
        name.removeprefix(EMBEDDINGS_TABLE_PREFIX)
        for name in store.table_names()
        if name.startswith(EMBEDDINGS_TABLE_PREFIX)
    ]
    live = current_alias(store)
    protected = set(registered) | {v for v in (live.model_version if live else None, previous_version(store)) if v}
    retired = [v for v in versions if v not in protected]
    last_written = {v: store.open_embeddings_table(v).list_versions()[-1]["timestamp"] for v in retired}
    retired.sort(key=lambda v: (last_written[v], v), reverse=True)
    for version in retired[keep:]:
        store.db.drop_table(embeddings_table_name(version))
        # Its kept vectors of deleted content serve no table any more.
        drop_retained_table(store, version)
    return RetentionResult(kept=sorted(set(versions) - set(retired[keep:])), dropped=sorted(retired[keep:]))
