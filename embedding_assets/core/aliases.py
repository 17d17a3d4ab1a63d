"""The `aliases` table: which model version readers see. One row per alias, switched in one commit.

Every switch is a new version of the table, so its history is the list of what was live
when: rollback reads it and writes the previous row back.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import lancedb
import pyarrow as pa

from embedding_assets.core.schemas import ALIASES_SCHEMA, embeddings_table_name
from embedding_assets.core.store import LanceStore, scan, sql_literal, upsert

LIVE_ALIAS = "live"
HISTORY_DEPTH = 200


@dataclass(frozen=True)
class Alias:
    alias: str
    model_version: str
    table: str
    table_version: int
    switched_at: datetime
    switched_by: str


def current_alias(store: LanceStore, alias: str = LIVE_ALIAS) -> Alias | None:
    rows = scan(store.table("aliases"), f"alias = {sql_literal(alias)}").to_pylist()
    return Alias(**rows[0]) if rows else None


class AliasReader:
    """The current aliases for a long-lived reader (the serving API), re-read only when they change.

    Its connection checks the table's latest version on every read (a manifest lookup, well
    under a millisecond), so a switch or a rollback is seen by the next request.
    """

    def __init__(self, store: LanceStore):
        self._store = store
        self._table = None
        self._read: tuple[int, dict[str, Alias]] | None = None

    def current(self, alias: str = LIVE_ALIAS) -> Alias | None:
        if self._table is None:
            if not self._store.has_table("aliases"):
                return None
            db = lancedb.connect(
                self._store.uri,
                storage_options=self._store.storage_options or None,
                read_consistency_interval=timedelta(0),
            )
            self._table = db.open_table("aliases")
        version = self._table.version
        if self._read is None or self._read[0] != version:
            self._read = (version, {row["alias"]: Alias(**row) for row in scan(self._table).to_pylist()})
        return self._read[1].get(alias)


def switch_alias(
    store: LanceStore, model_version: str, switched_by: str, now: datetime, alias: str = LIVE_ALIAS
) -> Alias:
    table_version = store.open_embeddings_table(model_version).version
    row = Alias(alias, model_version, embeddings_table_name(model_version), table_version, now, switched_by)
    upsert(store.table("aliases"), pa.Table.from_pylist([vars(row)], schema=ALIASES_SCHEMA), on="alias")
    return row


def alias_history(store: LanceStore, alias: str = LIVE_ALIAS) -> list[Alias]:
    """Every distinct state of `alias`, newest first, read from the table's versions."""
    table = store.db.open_table("aliases") if store.has_table("aliases") else None
    if table is None:
        return []
    history: list[Alias] = []
    for version in sorted((v["version"] for v in table.list_versions()), reverse=True)[:HISTORY_DEPTH]:
        table.checkout(version)
        rows = scan(table, f"alias = {sql_literal(alias)}").to_pylist()
        if rows and (not history or Alias(**rows[0]) != history[-1]):
            history.append(Alias(**rows[0]))
    table.checkout_latest()
    return history


def previous_version(store: LanceStore, alias: str = LIVE_ALIAS) -> str | None:
    """The version that was live before the current one."""
    history = alias_history(store, alias)
    return next((entry.model_version for entry in history[1:] if entry.model_version != history[0].model_version), None)


def ever_live(store: LanceStore, alias: str = LIVE_ALIAS) -> set[str]:
    return {entry.model_version for entry in alias_history(store, alias)}
