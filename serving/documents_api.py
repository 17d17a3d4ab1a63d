"""Online writes: `POST /v1/documents`, `DELETE /v1/documents/{id}` and `GET /v1/documents/{id}`.

A write is appended to the inbox (`core/inbox.py`, a LanceDB table beside the pipeline's) and answered
202 with a change id once its commit returned, so it survives a restart; `corpus_change_sensor` applies
it on its next tick. Only what cannot become an addressable document is refused at once (no id, an id
repeated in one request, an id too long or with control characters); a text is judged by the corpus
stage, like a source's, and a refused one shows as `rejected` with the same quarantine reason.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, model_validator

from embedding_assets.core.document_status import document_status
from embedding_assets.core.freshness import freshness_since
from embedding_assets.core.inbox import DELETE, UPSERT, InboxWrite, append_rows, inbox_rows, new_change_id
from embedding_assets.core.store import LanceStore
from serving.access import parse_body
from serving.errors import APIError
from serving.metrics import ServingMetrics
from serving.settings import ServingSettings

MAX_ID_CHARS = 512
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    text: str
    title: str | None = None
    # Kept with the write and returned by GET; not embedded.
    metadata: dict[str, Any] | None = None


class DocumentsRequest(BaseModel):
    """A list (`{"documents": [...]}`), or one document, read as a list of one."""

    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn]

    @model_validator(mode="before")
    @classmethod
    def _one_document(cls, data):
        return {"documents": [data]} if isinstance(data, dict) and "documents" not in data else data


def checked_id(doc_id: str, param: str) -> str:
    """An id the pipeline can address: the corpus refuses an empty one too (`missing_id`)."""
    if not doc_id.strip():
        raise APIError(400, f"{param}: the document has no id", "missing_id", param)
    if len(doc_id) > MAX_ID_CHARS:
        raise APIError(400, f"{param}: {len(doc_id)} characters; at most {MAX_ID_CHARS}", "invalid_id", param)
    if _CONTROL_CHARACTERS.search(doc_id):
        raise APIError(400, f"{param}: the id holds control characters", "invalid_id", param)
    return doc_id


class InboxWriter:
    """Appends requests' writes to the inbox, one commit for all the requests that arrived while the last
    commit ran: a burst of small writes costs a few commits (and inbox fragments), not one each, and the
    event loop never waits on storage, so embedding requests go on being served meanwhile."""

    def __init__(self, store: LanceStore):
        self._store = store
        self._waiting: list[tuple[list[dict], asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def write(self, rows: list[dict]) -> None:
        """Returns once `rows` are committed."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, done))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await asyncio.to_thread(append_rows, self._store, [row for rows, _ in group for row in rows])
                outcome = None
            except Exception as error:  # each request waiting on this commit fails with it
                outcome = error
            for _, done in group:
                if done.done():
                    continue
                if outcome:
                    done.set_exception(outcome)
                else:
                    done.set_result(None)


class FreshnessExport:
    """The pipeline's freshness rows (`core/freshness.py`) observed into the server's histogram, read at
    each scrape: the changes that became searchable since the server started."""

    def __init__(self, store: LanceStore, metrics: ServingMetrics):
        self._store = store
        self._metrics = metrics
        self._since = datetime.now(timezone.utc)

    def observe_new(self) -> None:
        for row in freshness_since(self._store, self._since):
            self._metrics.change_to_searchable.labels(row["origin"]).observe(row["seconds"])
            self._since = row["searchable_at"]


def documents_router(
    settings: ServingSettings, store: LanceStore, metrics: ServingMetrics, admit: Callable[[Request], Awaitable]
) -> APIRouter:
    router = APIRouter()
    writer = InboxWriter(store)

    async def accept(writes: list[InboxWrite]) -> JSONResponse:
        change_id = new_change_id()
        await writer.write(inbox_rows(change_id, writes, datetime.now(timezone.utc)))
        for write in writes:
            metrics.documents_written.labels(write.op).inc()
        ids = [write.doc_id for write in writes]
        return JSONResponse({"object": "document.change", "change_id": change_id, "status": "pending", "ids": ids}, 202)

    @router.post("/v1/documents")
    async def upsert_documents(request: Request) -> JSONResponse:
        await admit(request)
        body = await parse_body(request, DocumentsRequest, settings.max_request_bytes)
        if not body.documents:
            raise APIError(400, "documents is an empty list", "empty_input", "documents")
        if len(body.documents) > settings.max_input_items:
            count = len(body.documents)
            raise APIError(
                400, f"{count} documents; at most {settings.max_input_items}", "too_many_inputs", "documents"
            )
        seen: set[str] = set()
        for index, document in enumerate(body.documents):
            checked_id(document.id, f"documents.{index}.id")
            if document.id in seen:
                message = f"documents.{index}.id: {document.id!r} is given twice in one request"
                raise APIError(400, message, "duplicate_id", f"documents.{index}.id")
            seen.add(document.id)
        return await accept([InboxWrite(d.id, UPSERT, d.text, d.title, d.metadata) for d in body.documents])

    @router.delete("/v1/documents/{doc_id:path}")
    async def delete_document(request: Request, doc_id: str) -> JSONResponse:
        await admit(request)
        return await accept([InboxWrite(checked_id(doc_id, "id"), DELETE)])

    @router.get("/v1/documents/{doc_id:path}")
    async def get_document(request: Request, doc_id: str) -> JSONResponse:
        await admit(request)
        status = await asyncio.to_thread(document_status, store, doc_id)
        if status is None:
            raise APIError(
                404, f"no document {doc_id!r}: neither written nor in the corpus", "document_not_found", "id"
            )
        return JSONResponse({"object": "document", **status})

    return router
