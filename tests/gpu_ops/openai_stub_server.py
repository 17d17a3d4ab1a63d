"""A real OpenAI-compatible embeddings server on 127.0.0.1, backed by a local encoder, with faults on demand.

It speaks `POST /v1/embeddings` (bearer key, `input`, `model`, `dimensions`; `data`, `usage`), so
the hosted encoder is tested over real HTTP. Faults: `script` answers the next requests with the
listed faults in order; `failures_per_payload` makes every distinct request fail that many times
before it is answered (1: exactly half of all requests fail), cycling through `rotation`. Faults
are "429" (with `Retry-After`), "500", "slow" (answered after `slow_s`, past a client's timeout)
and "malformed" (a 200 with truncated JSON). Texts in `rejected_texts` are refused with a 400.
Every request is recorded, so tests assert the batching.

It also speaks the Batch API: `POST /v1/files` (multipart, purpose `batch`), `POST /v1/batches`,
`GET /v1/batches/{id}` (validating, in_progress, finalizing, then `batch_outcome` after
`batch_polls` polls) and `GET /v1/files/{id}/content`. A finished batch answers its request lines
in an output file; the first `batch_failed_lines` lines answer 500 and lines holding a rejected text
answer 400, in an error file. An `expired` batch answers only its first half of lines.
"""

import email.parser
import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


@dataclass(frozen=True)
class RecordedRequest:
    inputs: list[str]
    status: int
    fault: str | None
    arrived: float
    # The provider's count (the backing encoder's tokenizer), what `usage.prompt_tokens` says on success.
    tokens: int


@dataclass
class StubConfig:
    api_key: str
    script: list[str] = field(default_factory=list)
    failures_per_payload: int = 0
    rotation: tuple[str, ...] = ("500", "429", "malformed")
    rejected_texts: set[str] = field(default_factory=set)
    retry_after_s: int = 1
    slow_s: float = 2.0
    # Time every answer takes, so concurrent requests overlap and can be counted.
    latency_s: float = 0.0
    # The Batch API: polls before a batch finishes, how it finishes, and lines that fail with a 500.
    batch_polls: int = 2
    batch_outcome: str = "completed"
    batch_failed_lines: int = 0


class StubEmbeddingsServer:
    """`with StubEmbeddingsServer(encoder, config) as server:` serves on `server.base_url` until the block ends."""

    def __init__(self, encoder, config: StubConfig):
        self.encoder = encoder
        self.config = config
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._attempts_by_payload: Counter = Counter()
        self._failures = 0
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def __enter__(self) -> "StubEmbeddingsServer":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._http.shutdown()
        self._http.server_close()

    @property
    def failed(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.fault or request.status != 200]

    @property
    def answered(self) -> list[RecordedRequest]:
        return [request for request in self.requests if not request.fault and request.status == 200]

    def _next_fault(self, inputs: list[str]) -> str | None:
        with self._lock:
            if self.config.script:
                return self.config.script.pop(0)
            payload = hashlib.sha256(json.dumps(inputs).encode()).hexdigest()
            self._attempts_by_payload[payload] += 1
            if self._attempts_by_payload[payload] > self.config.failures_per_payload:
                return None
            self._failures += 1
            return self.config.rotation[(self._failures - 1) % len(self.config.rotation)]

    def _embed(self, inputs: list[str], dimensions: int | None) -> np.ndarray:
        with self._model_lock:
            vectors = self.encoder.encode_texts(inputs).vectors
        if dimensions:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors

    def _provider_tokens(self, inputs: list[str]) -> int:
        # Under the model's lock: a fast tokenizer refuses concurrent use.
        with self._model_lock:
            return sum(len(spans) for spans in self.encoder.token_spans(inputs))

    def answer(self, authorization: str | None, body: dict) -> tuple[int, dict, bytes]:
        """(status, headers, body) for one request, recorded as it arrives, then sent after its delay."""
        arrived = time.monotonic()
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        fault = None
        tokens = self._provider_tokens(inputs) if inputs else 0
        if authorization != f"Bearer {self.config.api_key}":
            status, headers, payload = 401, {}, _error("Incorrect API key provided", "invalid_api_key")
        elif not inputs or not all(isinstance(text, str) and text for text in inputs):
            status, headers, payload = 400, {}, _error("'input' must be non-empty strings", "invalid_request_error")
        else:
            fault = self._next_fault(inputs)
            status, headers, payload = self._embeddings_answer(inputs, body, fault, tokens)
        with self._lock:
            self.requests.append(RecordedRequest(inputs, status, fault, arrived, tokens))
        time.sleep(self.config.slow_s if fault == "slow" else self.config.latency_s)
        return status, headers, payload

    def _embeddings_answer(
        self, inputs: list[str], body: dict, fault: str | None, tokens: int
    ) -> tuple[int, dict, bytes]:
        if fault == "429":
            return 429, {"Retry-After": str(self.config.retry_after_s)}, _error("injected 429", "rate_limit_exceeded")
        if fault == "500":
            return 500, {}, _error("injected 500", "server_error")
        if fault == "malformed":
            return 200, {}, b'{"object": "list", "data": [{"index": 0, "embedding": [0.1,'
        refused = [index for index, text in enumerate(inputs) if text in self.config.rejected_texts]
        if refused:
            return 400, {}, _error(f"input {refused[0]} is invalid: unsupported content", "invalid_request_error")
        vectors = self._embed(inputs, body.get("dimensions"))
        answer = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": vector.tolist()} for i, vector in enumerate(vectors)
            ],
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return 200, {}, json.dumps(answer).encode()

    # --- The Batch API ---------------------------------------------------------------------------------

    def upload(self, content_type: str, body: bytes) -> tuple[int, dict, bytes]:
        message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        parts = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
        if parts["purpose"].get_payload(decode=True).decode() != "batch":
            return 400, {}, _error("purpose must be batch", "invalid_request_error")
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = parts["file"].get_payload(decode=True)
        answer = {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(self.files[file_id])}
        return 200, {}, json.dumps(answer).encode()

    def create_batch(self, body: dict) -> tuple[int, dict, bytes]:
        if body.get("input_file_id") not in self.files or body.get("endpoint") != "/v1/embeddings":
            return 400, {}, _error("unknown input file or endpoint", "invalid_request_error")
        batch_id = f"batch_{next(self._ids)}"
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body.get("completion_window"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "polls": 0,
        }
        return 200, {}, json.dumps(self.batches[batch_id]).encode()

    def poll_batch(self, batch_id: str) -> tuple[int, dict, bytes]:
        batch = self.batches.get(batch_id)
        if batch is None:
            return 404, {}, _error(f"no batch {batch_id}", "not_found")
        with self._lock:
            if batch["status"] not in ("completed", "failed", "expired", "cancelled"):
                batch["polls"] += 1
                steps = ["validating", "in_progress", "finalizing"]
                if batch["polls"] >= self.config.batch_polls:
                    self._finish_batch(batch)
                else:
                    batch["status"] = steps[min(batch["polls"], len(steps) - 1)]
        return 200, {}, json.dumps(batch).encode()

    def _finish_batch(self, batch: dict) -> None:
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].decode().splitlines() if line]
        if self.config.batch_outcome == "failed":
            batch["status"] = "failed"
            return
        if self.config.batch_outcome == "expired":
            lines = lines[: len(lines) // 2]
        output, errors = [], []
        for number, line in enumerate(lines):
            inputs = line["body"]["input"]
            answer = {"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None}
            if number < self.config.batch_failed_lines:
                answer["response"] = {"status_code": 500, "body": json.loads(_error("injected 500", "server_error"))}
                errors.append(answer)
                continue
            refused = [i for i, text in enumerate(inputs) if text in self.config.rejected_texts]
            if refused:
                message = f"input {refused[0]} is invalid: unsupported content"
                answer["response"] = {"status_code": 400, "body": json.loads(_error(message, "invalid_request_error"))}
                errors.append(answer)
                continue
            tokens = self._provider_tokens(inputs)
            vectors = self._embed(inputs, line["body"].get("dimensions"))
            data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
            body = {"object": "list", "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
            answer["response"] = {"status_code": 200, "body": body}
            output.append(answer)
        for key, answers in (("output_file_id", output), ("error_file_id", errors)):
            if answers:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = "".join(json.dumps(a) + "\n" for a in answers).encode()
                batch[key] = file_id
        batch["status"] = self.config.batch_outcome
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}


def _error(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()


def _handler_for(server: StubEmbeddingsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _authorized(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {server.config.api_key}":
                return True
            self._send(401, {}, _error("Incorrect API key provided", "invalid_api_key"))
            return False

        def do_GET(self) -> None:
            server.batch_calls.append(("GET", self.path))
            if not self._authorized():
                return
            if self.path.startswith("/v1/batches/"):
                self._send(*server.poll_batch(self.path.removeprefix("/v1/batches/")))
            elif self.path.startswith("/v1/files/") and self.path.endswith("/content"):
                file_id = self.path.removeprefix("/v1/files/").removesuffix("/content")
                found = server.files.get(file_id)
                self._send(200, {}, found) if found is not None else self._send(404, {}, _error("no file", "nf"))
            else:
                self._send(404, {}, _error(f"no route {self.path}", "not_found"))

        def do_POST(self) -> None:
            if self.path in ("/v1/files", "/v1/batches"):
                server.batch_calls.append(("POST", self.path))
                if not self._authorized():
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/v1/files":
                    self._send(*server.upload(self.headers.get("Content-Type", ""), body))
                else:
                    self._send(*server.create_batch(json.loads(body)))
                return
            if self.path != "/v1/embeddings":
                self._send(404, {}, _error(f"no route {self.path}", "not_found"))
                return
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self._send(*server.answer(self.headers.get("Authorization"), body))
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _send(self, status: int, headers: dict, payload: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a slow answer past its timeout)

        def log_message(self, *_) -> None:
            pass

    return Handler
