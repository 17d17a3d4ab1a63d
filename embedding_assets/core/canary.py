"""An alias's canary: a share of its traffic served by a candidate version, at a gated table version.

Routing is sticky: a caller (a user header, else its API key, else its address) falls in a bucket
from a hash of its identity and the alias, so the same caller sees the same version while the share
stays, and a larger share only adds callers to the candidate. Each request is embedded and searched
within the one version it was routed to.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.schemas import CANARIES_SCHEMA, embeddings_table_name
from embedding_assets.core.store import LanceStore, scan, sql_literal, upsert

BUCKETS = 10_000


@dataclass(frozen=True)
class Canary:
    alias: str
    model_version: str
    table: str
    table_version: int
    share: float
    set_at: datetime
    set_by: str


def current_canary(store: LanceStore, alias: str) -> Canary | None:
    if not store.has_table("canaries"):
        return None
    rows = scan(store.table("canaries"), f"alias = {sql_literal(alias)}").to_pylist()
    return Canary(**rows[0]) if rows else None


def set_canary(
    store: LanceStore, alias: str, model_version: str, table_version: int, share: float, set_by: str, now: datetime
) -> Canary:
    """Route `share` (0 < share < 1) of `alias`'s traffic to `table_version` of `model_version`, in one commit."""
    if not 0 < share < 1:
        raise ValueError(f"a canary's share is between 0 and 1 exclusive, not {share}")
    row = Canary(alias, model_version, embeddings_table_name(model_version), table_version, share, now, set_by)
    upsert(store.table("canaries"), pa.Table.from_pylist([vars(row)], schema=CANARIES_SCHEMA), on="alias")
    return row


def clear_canary(store: LanceStore, alias: str) -> bool:
    """All of `alias`'s traffic back on its live version (one commit); whether there was a canary."""
    if not store.has_table("canaries"):
        return False
    return store.table("canaries").delete(f"alias = {sql_literal(alias)}").num_deleted_rows > 0


def canary_pins(store: LanceStore, model_version: str) -> set[int]:
    """Table versions of `model_version` a canary serves now: cleanup must keep them readable."""
    if not store.has_table("canaries"):
        return set()
    rows = scan(store.table("canaries"), f"model_version = {sql_literal(model_version)}", ["table_version"])
    return set(rows.column("table_version").to_pylist())


def routed_to_canary(canary: Canary | None, caller: str) -> bool:
    """Whether `caller` is in the canary's share of its alias (the same answer for as long as the share stays)."""
    if canary is None:
        return False
    digest = hashlib.sha256(f"{canary.alias}\0{caller}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS < round(canary.share * BUCKETS)
