"""The `aliases` table: which model version, at which table version, readers see.

One row per alias names a table *and* a Lance table version whose gates passed; readers open
exactly that version, never the table's latest, so writes in flight and changes whose checks
fail stay invisible. Each switch is one commit and a new version of this table, so its history
is the list of what was live when: rollback reads it and writes the previous row back.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

import lancedb
import pyarrow as pa

from embedding_assets.core.canary import Canary, canary_pins
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
    """The current aliases and their canaries for a long-lived reader (the serving API), re-read only
    when they change.

    Its connection checks each table's latest version on every read (a manifest lookup, well
    under a millisecond), so a switch, a canary's move or a rollback is seen by the next request.
    """

    def __init__(self, store: LanceStore):
        self._store = store
        self._db = None
        self._tables: dict[str, object] = {}
        self._read: dict[str, tuple[int, dict]] = {}

    def _rows(self, name: str, row_type) -> dict:
        table = self._tables.get(name)
        if table is None:
            if not self._store.has_table(name):
                return {}
            if self._db is None:
                self._db = lancedb.connect(
                    self._store.uri,
                    storage_options=self._store.storage_options or None,
                    read_consistency_interval=timedelta(0),
                )
            table = self._tables[name] = self._db.open_table(name)
        version = table.version
        if name not in self._read or self._read[name][0] != version:
            self._read[name] = (version, {row["alias"]: row_type(**row) for row in scan(table).to_pylist()})
        return self._read[name][1]

    def current(self, alias: str = LIVE_ALIAS) -> Alias | None:
        return self._rows("aliases", Alias).get(alias)

    def canary(self, alias: str = LIVE_ALIAS) -> Canary | None:
        return self._rows("canaries", Canary).get(alias)

    def all(self) -> tuple[dict[str, Alias], dict[str, Canary]]:
        return self._rows("aliases", Alias), self._rows("canaries", Canary)


def open_pinned(store: LanceStore, alias: Alias):
    """The alias's table, checked out at the version it pins."""
    return store.open_embeddings_table(alias.model_version, alias.table_version)


def switch_alias(
    store: LanceStore,
    model_version: str,
    table_version: int,
    switched_by: str,
    now: datetime,
    alias: str = LIVE_ALIAS,
) -> Alias:
    """Point `alias` at `table_version` of `model_version` (one the gates passed), in one commit."""
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


def previous_pin(store: LanceStore, alias: str = LIVE_ALIAS, model_version: str | None = None) -> Alias | None:
    """The last state of `alias` on another model version than now (or on `model_version`): rollback's target."""
    history = alias_history(store, alias)
    return next(
        (
            entry
            for entry in history[1:]
            if entry.model_version != history[0].model_version
            and (model_version is None or entry.model_version == model_version)
        ),
        None,
    )


def previous_version(store: LanceStore, alias: str = LIVE_ALIAS) -> str | None:
    """The version that was live before the current one."""
    pin = previous_pin(store, alias)
    return pin.model_version if pin else None


def protected_table_versions(store: LanceStore, model_version: str) -> set[int]:
    """Table versions of `model_version` that an alias pins now or pinned just before (rollback's target),
    or that a canary serves: compaction and cleanup must keep them readable."""
    pins = canary_pins(store, model_version)
    if not store.has_table("aliases"):
        return pins
    for row in scan(store.table("aliases"), None, ["alias"]).to_pylist():
        history = alias_history(store, row["alias"])[:2]
        pins |= {entry.table_version for entry in history if entry.model_version == model_version}
    return pins


def ever_live(store: LanceStore, alias: str = LIVE_ALIAS) -> set[str]:
    return {entry.model_version for entry in alias_history(store, alias)}
