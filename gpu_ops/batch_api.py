"""A hosted backfill through the OpenAI Batch API: half the price, results within the completion window.

The texts the embedding stage hands over (one commit group) become one JSONL file of `/v1/embeddings`
requests, packed as the synchronous path packs them; it is uploaded (`POST /files`, purpose `batch`),
a batch is created (`POST /batches`), polled (`GET /batches/{id}`) until it ends, and its output and
error files are downloaded (`GET /files/{id}/content`). The batch id is recorded in a ledger under
the hash of the file's content before any wait, so a run killed while the provider works resumes
the same batch when rerun, and pays nothing twice. Requests the batch refused for their input
(4xx) with a single text go to quarantine; any other failed request, and every request of a batch
that failed or expired, go through the synchronous path, which retries and isolates refused texts.
"""

import hashlib
import json
import time
from typing import Protocol

import httpx
import numpy as np

from gpu_ops.encoder import EncodedBatch
from gpu_ops.hosted_encoder import (
    INPUT_ERROR_STATUSES,
    PROVIDER_REJECTED,
    HostedEncoder,
    HostedModelError,
    _normalized,
    parse_embeddings,
    request_batches,
)
from gpu_ops.registry import ModelSpec

BATCH_ENDPOINT = "/v1/embeddings"
COMPLETION_WINDOW = "24h"
FINISHED = frozenset({"completed", "failed", "expired", "cancelled"})
# The Batch API's price as a share of the list price (OpenAI: half).
BATCH_PRICE_FACTOR = 0.5


class BatchLedger(Protocol):
    """Where batch ids outlive a run: request file hash -> batch id."""

    def find(self, request_key: str) -> str | None: ...

    def record(self, request_key: str, batch_id: str) -> None: ...


class MemoryLedger:
    def __init__(self):
        self.batches: dict[str, str] = {}

    def find(self, request_key: str) -> str | None:
        return self.batches.get(request_key)

    def record(self, request_key: str, batch_id: str) -> None:
        self.batches[request_key] = batch_id


class BatchApiEncoder(HostedEncoder):
    """A hosted model whose texts go through the Batch API, falling back to the synchronous endpoint."""

    def __init__(self, spec: ModelSpec, ledger: BatchLedger | None = None):
        super().__init__(spec)
        # Only a backfill attaches a ledger (the embedding stage, per shard): queries (evaluation, the
        # version diff, serving) cannot wait hours for a batch, so without one texts go synchronously.
        self.ledger: BatchLedger | None = ledger
        self.batch_calls = 0
        self.batch_tokens = 0
        self.batch_ids: list[str] = []
        self.fallback_requests = 0

    def attach_batch_ledger(self, ledger: BatchLedger) -> None:
        self.ledger = ledger

    @property
    def estimated_cost_usd(self) -> float:
        synchronous = self.tokens - self.batch_tokens
        price = self.spec.price_per_1k_tokens / 1000
        return (synchronous + self.batch_tokens * BATCH_PRICE_FACTOR) * price

    def metadata(self) -> dict:
        return {
            **super().metadata(),
            "batch_ids": ", ".join(self.batch_ids) or "none",
            "batch_api_calls": self.batch_calls,
            "batch_tokens": self.batch_tokens,
            "batch_fallback_requests": self.fallback_requests,
        }

    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        if self.ledger is None:
            return super().encode_texts(texts, token_counts)
        if token_counts is None:
            token_counts = [len(spans) for spans in self.token_spans(texts)]
        groups = request_batches(token_counts, self.spec.max_request_items, self.spec.max_request_tokens)
        content = "".join(
            json.dumps(self._request_line(f"request-{i}", [texts[j] for j in g])) + "\n" for i, g in enumerate(groups)
        )
        batch = self._finished_batch(hashlib.sha256(content.encode()).hexdigest(), content)
        answered, refused = self._results(batch, groups)
        found: dict[int, np.ndarray] = {}
        failures: dict[int, tuple[str, str]] = {}
        for index, group in enumerate(groups):
            if index in answered:
                found |= dict(zip(group, answered[index]))
            elif index in refused:
                failures[group[0]] = refused[index]
            else:
                self.fallback_requests += 1
                vectors, rejected = self._embed(texts, token_counts, group)
                found |= vectors
                failures |= rejected
        width = len(next(iter(found.values()))) if found else self.spec.dim
        vectors = np.full((len(texts), width), np.nan, dtype=np.float32)
        for index, vector in found.items():
            vectors[index] = vector
        return EncodedBatch(vectors, len(groups), sum(token_counts), failures)

    def _request_line(self, custom_id: str, inputs: list[str]) -> dict:
        body = {"model": self.spec.model_id, "input": inputs, "encoding_format": "float"}
        if self.spec.dimensions is not None:
            body["dimensions"] = self.spec.dimensions
        return {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}

    def _call(self, method: str, path: str, **kwargs) -> httpx.Response:
        self.batch_calls += 1
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise HostedModelError(f"model {self.spec.key}: Batch API {method} {path}: {error}") from error
        if response.status_code >= 400:
            raise HostedModelError(
                f"model {self.spec.key}: Batch API {method} {path}: HTTP {response.status_code} {response.text[:300]}"
            )
        return response

    def _finished_batch(self, request_key: str, content: str) -> dict:
        """The batch of this request file, created once (its id recorded before any wait), polled until it ends."""
        batch_id = self.ledger.find(request_key)
        if batch_id is None:
            files = {"file": (f"{request_key[:16]}.jsonl", content.encode(), "application/jsonl")}
            uploaded = self._call("POST", "/files", data={"purpose": "batch"}, files=files).json()
            created = self._call(
                "POST",
                "/batches",
                json={
                    "input_file_id": uploaded["id"],
                    "endpoint": BATCH_ENDPOINT,
                    "completion_window": COMPLETION_WINDOW,
                    "metadata": {"model_version": self.spec.key, "request_key": request_key},
                },
            ).json()
            batch_id = created["id"]
            self.ledger.record(request_key, batch_id)
        self.batch_ids.append(batch_id)
        deadline = time.monotonic() + self.spec.batch_wait_s
        while (batch := self._call("GET", f"/batches/{batch_id}").json())["status"] not in FINISHED:
            if time.monotonic() > deadline:
                raise HostedModelError(
                    f"model {self.spec.key}: batch {batch_id} still {batch['status']} after {self.spec.batch_wait_s}s; "
                    "its id is kept with the shard: rerun to resume it"
                )
            time.sleep(self.spec.batch_poll_s)
        return batch

    def _lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        text = self._call("GET", f"/files/{file_id}/content").text
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _results(self, batch: dict, groups: list[list[int]]):
        """(request index -> vectors, request index -> refusal) of what the batch answered."""
        answered, refused = {}, {}
        for line in self._lines(batch.get("output_file_id")) + self._lines(batch.get("error_file_id")):
            index = int(str(line.get("custom_id", "")).removeprefix("request-") or -1)
            if not 0 <= index < len(groups):
                continue
            response = line.get("response") or {}
            status = response.get("status_code")
            if status == 200 and not line.get("error"):
                try:
                    vectors, tokens = parse_embeddings(json.dumps(response.get("body")).encode(), len(groups[index]))
                except ValueError:
                    continue
                self._count(tokens=tokens or 0)
                self.batch_tokens += tokens or 0
                answered[index] = _normalized(vectors) if self.spec.normalize else vectors
            elif status in INPUT_ERROR_STATUSES and len(groups[index]) == 1:
                message = ((response.get("body") or {}).get("error") or {}).get("message", "")
                refused[index] = (PROVIDER_REJECTED, f"HTTP {status} (batch {batch['id']}): {message}")
        return answered, refused
