"""A hosted model behind an OpenAI-compatible `/embeddings` endpoint, as an encoder.

Same interface as the local encoders (`token_spans`, `windows`, `encode_texts`), so the pipeline
embeds a hosted version side by side with local ones, in its own table. Requests are packed to
the provider's limits (items and tokens per request) and sent concurrently up to a limit.
Transient failures (429, 5xx, timeouts, lost connections, malformed answers) are retried with
exponential backoff and full jitter, never sooner than the provider's `Retry-After`. An input
error (400, 413, 422) is never retried: the request is split in halves until the refused texts
stand alone, the others are embedded, and the refused ones are reported for quarantine.
"""

import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np

from gpu_ops.encoder import EncodedBatch, Encoder
from gpu_ops.registry import ModelSpec

# tiktoken's cl100k_base pre-tokenizer, in the `re` dialect: contractions, words with one leading
# space or mark, numbers three digits at a time, runs of punctuation, whitespace.
PRE_TOKEN = re.compile(
    r"'(?i:[sdmt]|ll|ve|re)"
    r"|(?:[^\r\n\w]|_)?[^\W\d_]+"
    r"|\d{1,3}"
    r"| ?(?:[^\s\w]|_)+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
ASCII_CHARACTERS_PER_TOKEN = 8
RETRYABLE_STATUSES = frozenset({408, 409, 429})
INPUT_ERROR_STATUSES = frozenset({400, 413, 422})
PROVIDER_REJECTED = "provider_rejected"
RETRY_BASE_SECONDS = 0.5
RETRY_CAP_SECONDS = 30.0


class HostedModelError(RuntimeError):
    """The provider cannot be used (bad key, unknown model, retries exhausted): the run fails, no document is blamed."""


@dataclass(frozen=True)
class TransientFailure:
    """A failed attempt worth retrying, and how long the provider asked to wait (Retry-After)."""

    problem: str
    retry_after: float | None = None


class ProviderInputError(Exception):
    """The provider refused the request's input (400, 413, 422): retrying the same input cannot help."""

    def __init__(self, status: int, message: str):
        self.detail = f"HTTP {status}: {message}"
        super().__init__(self.detail)


def estimated_token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of `text`'s tokens, an ESTIMATE of an OpenAI tokenizer (cl100k_base).

    tiktoken's BPE tables cannot be fetched offline, so the count is its pre-tokenizer's pieces,
    with a piece costing one token per started 8 ASCII characters and one per other character.
    It errs high on rare long words and non-Latin scripts, the safe side of the provider's
    limits; what is billed is the provider's own count (`usage.prompt_tokens`).
    """
    spans = []
    for match in PRE_TOKEN.finditer(text):
        start, end = match.span()
        step = ASCII_CHARACTERS_PER_TOKEN if match.group().isascii() else 1
        spans += [(first, min(first + step, end)) for first in range(start, end, step)]
    return spans


def estimated_token_count(text: str) -> int:
    return len(estimated_token_spans(text))


def request_batches(token_counts: list[int], max_items: int, max_tokens: int) -> list[list[int]]:
    """Consecutive indices packed into requests within the provider's items and tokens per request.

    A single text over `max_tokens` still gets a request of its own: the provider decides.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for index, count in enumerate(token_counts):
        if current and (len(current) == max_items or tokens + count > max_tokens):
            batches.append(current)
            current, tokens = [], 0
        current.append(index)
        tokens += count
    if current:
        batches.append(current)
    return batches


def backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Full jitter (uniform up to base x 2^attempt, capped), never shorter than the provider's Retry-After."""
    jitter = random.uniform(0.0, min(RETRY_CAP_SECONDS, RETRY_BASE_SECONDS * 2**attempt))
    return max(retry_after or 0.0, jitter)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    try:
        return max(0.0, float(headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def provider_message(response: httpx.Response) -> str:
    """The provider's own words about a refusal (OpenAI's `error.message`), or the start of the body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def parse_embeddings(body: bytes, count: int) -> tuple[np.ndarray, int | None]:
    """(vectors in input order, prompt tokens) of an embeddings response; ValueError if it is malformed."""
    try:
        payload = json.loads(body)
        items = sorted(payload["data"], key=lambda item: item["index"])
        if [item["index"] for item in items] != list(range(count)):
            raise ValueError(f"expected embeddings 0..{count - 1}, got indices {[item['index'] for item in items]}")
        vectors = np.asarray([item["embedding"] for item in items], dtype=np.float32)
        tokens = (payload.get("usage") or {}).get("prompt_tokens")
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"unexpected response shape: {error!r}") from error
    if vectors.ndim != 2:
        raise ValueError(f"embeddings of shape {vectors.shape}")
    return vectors, tokens


def backfill_cost_usd(documents: int, tokens_per_document: float, price_per_1k_tokens: float) -> float:
    """The seed estimate of a backfill's cost: documents x tokens per document / 1000 x price."""
    return documents * tokens_per_document / 1000 * price_per_1k_tokens


class HostedEncoder(Encoder):
    """An OpenAI-compatible embeddings endpoint; the API key comes from the variable `spec.api_key_env`."""

    device = "hosted"
    dtype = "float32"

    def __init__(self, spec: ModelSpec):
        api_key = os.environ.get(spec.api_key_env)
        if not api_key:
            raise HostedModelError(f"model {spec.key}: set the environment variable {spec.api_key_env} to its API key")
        self.spec = spec
        self.requests = 0
        self.retries = 0
        self.tokens = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=spec.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=spec.request_timeout_s,
            limits=httpx.Limits(max_connections=spec.max_concurrent_requests),
        )

    @property
    def estimated_cost_usd(self) -> float:
        return self.tokens / 1000 * self.spec.price_per_1k_tokens

    def metadata(self) -> dict:
        """What the provider was asked and what it costs, for the materialization."""
        return {
            "device": f"{self.device} ({self.dtype})",
            "provider_requests": self.requests,
            "provider_retries": self.retries,
            "provider_tokens": self.tokens,
            "price_per_1k_tokens": self.spec.price_per_1k_tokens,
            "estimated_cost_usd": round(self.estimated_cost_usd, 6),
        }

    def token_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Estimated token spans (see `estimated_token_spans`): no tokenizer of the provider is at hand."""
        return [estimated_token_spans(text) for text in texts]

    def encode_texts(self, texts: list[str], token_counts: list[int] | None = None) -> EncodedBatch:
        """Vectors of `texts` in their order; rows of texts the provider refused are NaN and listed in `failures`."""
        if token_counts is None:
            token_counts = [len(spans) for spans in self.token_spans(texts)]
        batches = request_batches(token_counts, self.spec.max_request_items, self.spec.max_request_tokens)
        workers = max(1, min(self.spec.max_concurrent_requests, len(batches)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"hosted-{self.spec.key}") as pool:
            results = list(pool.map(lambda batch: self._embed(texts, token_counts, batch), batches))
        found = {index: vector for vectors, _ in results for index, vector in vectors.items()}
        failures = {index: failure for _, refused in results for index, failure in refused.items()}
        # The provider's own output width, which validation compares with the registry's dim.
        width = len(next(iter(found.values()))) if found else self.spec.dim
        vectors = np.full((len(texts), width), np.nan, dtype=np.float32)
        for index, vector in found.items():
            vectors[index] = vector
        return EncodedBatch(vectors, len(batches), sum(token_counts), failures)

    def _embed(
        self, texts: list[str], token_counts: list[int], batch: list[int]
    ) -> tuple[dict[int, np.ndarray], dict[int, tuple[str, str]]]:
        """(vectors, failures) by index; a refused request is split in halves until the refused texts stand alone."""
        try:
            vectors = self._request([texts[i] for i in batch], sum(token_counts[i] for i in batch))
            return dict(zip(batch, vectors)), {}
        except ProviderInputError as error:
            if len(batch) == 1:
                return {}, {batch[0]: (PROVIDER_REJECTED, error.detail)}
        half = len(batch) // 2
        first_vectors, first_failures = self._embed(texts, token_counts, batch[:half])
        second_vectors, second_failures = self._embed(texts, token_counts, batch[half:])
        return first_vectors | second_vectors, first_failures | second_failures

    def _count(self, requests: int = 0, retries: int = 0, tokens: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.tokens += tokens

    def _request(self, texts: list[str], estimated_tokens: int) -> np.ndarray:
        """One request's vectors, retried on transient failures; raises ProviderInputError or HostedModelError."""
        payload = {"model": self.spec.model_id, "input": texts, "encoding_format": "float"}
        if self.spec.dimensions is not None:
            payload["dimensions"] = self.spec.dimensions
        attempt = 0
        while isinstance(outcome := self._attempt(payload, len(texts), estimated_tokens), TransientFailure):
            if attempt == self.spec.max_retries:
                raise HostedModelError(
                    f"model {self.spec.key}: gave up after {attempt + 1} attempts at {self.spec.base_url}: "
                    f"{outcome.problem}"
                )
            self._count(retries=1)
            time.sleep(backoff_seconds(attempt, outcome.retry_after))
            attempt += 1
        return outcome

    def _attempt(self, payload: dict, count: int, estimated_tokens: int) -> np.ndarray | TransientFailure:
        self._count(requests=1)
        try:
            response = self._client.post("/embeddings", json=payload)
        except httpx.TransportError as error:
            return TransientFailure(f"{type(error).__name__}: {error}")
        status = response.status_code
        if status in INPUT_ERROR_STATUSES:
            raise ProviderInputError(status, provider_message(response))
        if status in RETRYABLE_STATUSES or status >= 500:
            return TransientFailure(
                f"HTTP {status}: {provider_message(response)}", retry_after_seconds(response.headers)
            )
        if status != 200:
            raise HostedModelError(
                f"model {self.spec.key}: HTTP {status} from {self.spec.base_url}: {provider_message(response)}"
            )
        try:
            vectors, tokens = parse_embeddings(response.content, count)
        except ValueError as error:
            return TransientFailure(f"malformed response: {error}")
        self._count(tokens=estimated_tokens if tokens is None else tokens)
        return _normalized(vectors) if self.spec.normalize else vectors


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
