"""Where one document stands, as `GET /v1/documents/{id}` reports it: pending, live, deleted or rejected.

`live` means what readers see: the live pin's table version holds the document's newest content (the
newest inbox write's, or the corpus's for an id only the source names). A write no run applied yet is
pending, and so is one applied whose content the pin does not serve yet (its gates are still to pass).
A write the corpus stage refused is rejected, with the quarantine reason it gave.
"""

import json

from embedding_assets.core.aliases import LIVE_ALIAS, Alias, current_alias, open_pinned
from embedding_assets.core.corpus_sync import document_content_hash
from embedding_assets.core.inbox import UPSERT, newest_write
from embedding_assets.core.store import LanceStore, scan, sql_literal
from embedding_assets.core.text import normalize_text

PENDING, LIVE, DELETED, REJECTED = "pending", "live", "deleted", "rejected"


def _one(table, doc_id: str, columns: list[str], where: str = "") -> dict | None:
    rows = scan(table, f"doc_id = {sql_literal(doc_id)}{where}", columns).to_pylist()
    return rows[0] if rows else None


def _served_content(store: LanceStore, doc_id: str, pin: Alias | None) -> str | None:
    """The content hash the pinned table version serves for `doc_id` (None: it serves nothing under it)."""
    if pin is None:
        return None
    row = _one(open_pinned(store, pin), doc_id, ["content_hash"])
    return row["content_hash"] if row else None


def document_status(store: LanceStore, doc_id: str, alias: str = LIVE_ALIAS) -> dict | None:
    """The document's status through `alias` (None: neither the inbox nor the corpus ever knew it)."""
    write = newest_write(store, doc_id)
    document = _one(store.table("documents"), doc_id, ["content_hash", "deleted", "source_uri"])
    if write is None and document is None:
        return None
    status: dict = {"id": doc_id}
    if write is not None:
        status |= {
            "change_id": write["change_id"],
            "operation": write["op"],
            "received_at": write["received_at"].isoformat(),
            "applied_by": write["applied_by"] or None,
            "metadata": json.loads(write["metadata"]) if write["metadata"] else None,
        }
        if not write["applied_by"]:
            return status | {"status": PENDING}
    refusal = _one(store.table("quarantine"), doc_id, ["reason", "detail"], " AND stage = 'corpus'")
    if refusal is not None:
        return status | {"status": REJECTED, "reason": refusal["reason"], "detail": refusal["detail"]}
    if write is not None:
        expected = document_content_hash(normalize_text(write["text"]), None) if write["op"] == UPSERT else None
    else:
        expected = None if document["deleted"] else document["content_hash"]
    pin = current_alias(store, alias)
    served = _served_content(store, doc_id, pin)
    if served is not None and served == expected:
        return status | {"status": LIVE, "model_version": pin.model_version, "table_version": pin.table_version}
    return status | {"status": DELETED if expected is None and served is None else PENDING}
