"""The `aliases` table: which model version readers see. One row per alias, switched in one commit."""

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from resources.lance_store import ALIASES_SCHEMA, LanceStore, embeddings_table_name, scan, sql_literal, upsert

LIVE = "live"


@dataclass(frozen=True)
class Alias:
    alias: str
    model_version: str
    table: str
    table_version: int
    switched_at: datetime
    switched_by: str


def current_alias(store: LanceStore, alias: str = LIVE) -> Alias | None:
    rows = scan(store.table("aliases"), f"alias = {sql_literal(alias)}").to_pylist()
    return Alias(**rows[0]) if rows else None


def switch_alias(store: LanceStore, model_version: str, switched_by: str, now: datetime, alias: str = LIVE) -> Alias:
    table_version = store.open_embeddings_table(model_version).version
    row = Alias(alias, model_version, embeddings_table_name(model_version), table_version, now, switched_by)
    upsert(store.table("aliases"), pa.Table.from_pylist([vars(row)], schema=ALIASES_SCHEMA), on="alias")
    return row
