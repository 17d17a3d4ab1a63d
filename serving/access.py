"""Who a request comes from, what it may take, and its body read within the limit.

Keys are known only by their SHA-256 digests. With keys configured a caller is its key; without,
it is its client address, so a token it makes up changes nothing (neither its limit nor its access
to hosted models, which need a real key). Bodies are counted while they stream in: a chunked upload
(no Content-Length) is cut off at the limit instead of being read into memory whole.
"""

import hashlib
import hmac
import json
from dataclasses import dataclass

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving.errors import APIError
from serving.settings import ServingSettings

USER_HEADER = "x-user-id"
WORKLOAD_HEADER = "x-workload"


@dataclass(frozen=True)
class Caller:
    # What rate limits count under: a key's digest, or the client address.
    identity: str
    # A configured key was sent (hosted models and, when set, nothing else is open to others).
    authenticated: bool
    bulk_key: bool
    # Canary routing is sticky by this: the user header when sent, else the caller.
    sticky: str


def bearer_digest(request: Request) -> str | None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def matches(digest: str | None, digests) -> bool:
    """Constant-time comparison with every configured digest: timing leaks nothing about which was close."""
    if digest is None:
        return False
    return any([hmac.compare_digest(digest, known) for known in digests])


def identify(request: Request, settings: ServingSettings) -> Caller:
    digest = bearer_digest(request)
    if settings.api_key_digests:
        if not matches(digest, settings.api_key_digests):
            message = "missing API key: send 'Authorization: Bearer <key>'" if digest is None else "invalid API key"
            raise APIError(401, message, "invalid_api_key")
        identity = f"key:{digest}"
    else:
        identity = f"address:{request.client.host if request.client else 'unknown'}"
    authenticated = bool(settings.api_key_digests)
    user = request.headers.get(USER_HEADER, "").strip()[:200]
    return Caller(identity, authenticated, matches(digest, settings.bulk_key_digests), user or identity)


def require_metrics_key(request: Request, settings: ServingSettings) -> None:
    if settings.metrics_key_digest and not matches(bearer_digest(request), (settings.metrics_key_digest,)):
        raise APIError(
            401, "this endpoint needs the metrics key: send 'Authorization: Bearer <key>'", "invalid_api_key"
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with 413 as soon as more than `max_bytes` arrived (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"request body of {int(declared):,} bytes exceeds {max_bytes:,}", "request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise APIError(413, f"request body exceeds {max_bytes:,} bytes", "request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(request: Request, schema: type[BaseModel], max_bytes: int) -> BaseModel:
    """The body read within the limit and validated; malformed JSON or fields get 400 naming the field."""
    body = await read_body(request, max_bytes)
    try:
        return schema.model_validate(json.loads(body))
    except json.JSONDecodeError as error:
        raise APIError(400, f"the body is not valid JSON: {error}", "invalid_json") from error
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(map(str, first["loc"])) or None
        raise APIError(400, f"{param or 'body'}: {first['msg']}", "invalid_request", param) from error
