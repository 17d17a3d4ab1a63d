"""Redis stopped under traffic: the API keeps answering from its in-process tier, then uses Redis again.

A private redis-server on a free port, so the test can kill and restart it; the shared one stays up.
"""

import logging
import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from serving.app import create_app
from serving.settings import ServingSettings
from tests.builders import DEFAULT_VERSION
from tests.private_services import PrivateRedis, free_port, wait_until
from tests.serving.serving_server import RunningServer, wait_ready

API_KEY = "outage-key"
PREFIX = "embedding-api-outage"


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


class Traffic(threading.Thread):
    """Embeddings and searches sent one after another until stopped: every status, every vector."""

    def __init__(self, url: str, texts: list[str]):
        super().__init__(daemon=True)
        self.url = url
        self.texts = texts
        self.statuses: list[int] = []
        self.vectors: dict[str, list[np.ndarray]] = {text: [] for text in texts}
        self.slowest_s = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as client:
            while not self._halt.is_set():
                for text in self.texts:
                    started = time.monotonic()
                    embedded = client.post(f"{self.url}/v1/embeddings", json={"model": "live", "input": text})
                    searched = client.post(f"{self.url}/v1/search", json={"query": text, "k": 3})
                    self.slowest_s = max(self.slowest_s, (time.monotonic() - started) / 2)
                    self.statuses += [embedded.status_code, searched.status_code]
                    if embedded.status_code == 200:
                        self.vectors[text].append(np.asarray(embedded.json()["data"][0]["embedding"]))

    def requests_after(self, count: int) -> None:
        """Wait until `count` more requests were answered."""
        target = len(self.statuses) + count
        deadline = time.monotonic() + 60
        while len(self.statuses) < target:
            assert time.monotonic() < deadline and self.is_alive(), "the traffic stalled"
            time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)


def _metric(url: str, name: str) -> float:
    """The sum of a metric's samples over all its labels."""
    lines = httpx.get(f"{url}/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.split("{")[0].split(" ")[0] == name)


def test_answers_continue_while_redis_is_down_and_redis_is_used_again_when_back(deployment, private_redis, caplog):
    caplog.set_level(logging.INFO, logger="serving.redis_link")
    settings = ServingSettings(redis_url=private_redis.url, redis_prefix=PREFIX, api_keys=(API_KEY,))
    texts = [f"outage probe {n}: how do I read a file line by line?" for n in range(3)]
    with RunningServer(create_app(settings, deployment["resources"])) as server:
        wait_ready(server.url)
        traffic = Traffic(server.url, texts)
        traffic.start()
        traffic.requests_after(12)
        assert len(private_redis.keys(f"{PREFIX}:vector:*")) == len(texts)

        private_redis.kill()
        traffic.requests_after(40)
        assert _metric(server.url, "embedding_api_redis_up") == 0
        fresh = f"computed while Redis is down {uuid.uuid4().hex}"
        headers = {"Authorization": f"Bearer {API_KEY}"}
        down = httpx.post(f"{server.url}/v1/embeddings", json={"model": "live", "input": fresh}, headers=headers)
        assert down.status_code == 200

        private_redis.start()
        wait_until(lambda: httpx.get(f"{server.url}/stats").json()["cache"]["redis_up"], "the API uses Redis again")
        traffic.requests_after(12)
        traffic.stop()
        back = f"embedded after Redis came back {uuid.uuid4().hex}"
        written = httpx.post(f"{server.url}/v1/embeddings", json={"model": "live", "input": back}, headers=headers)
        assert written.status_code == 200
        errors = _metric(server.url, "embedding_api_redis_errors_total")

    assert traffic.statuses and set(traffic.statuses) == {200}, f"answers while Redis was down: {traffic.statuses}"
    # Redis being dead costs a request no timeout: it is skipped until the probe finds it back.
    assert traffic.slowest_s < 2.0
    for text, vectors in traffic.vectors.items():
        assert all(np.array_equal(vector, vectors[0]) for vector in vectors), text
    assert errors >= 1
    outages = [record for record in caplog.records if record.getMessage().startswith("Redis failed")]
    assert len(outages) == 1 and outages[0].levelno == logging.WARNING
    assert any(record.getMessage().startswith("Redis answers again") for record in caplog.records)
    # The restarted Redis came back empty: what is in it now was written after the reconnection.
    assert private_redis.keys(f"{PREFIX}:vector:{DEFAULT_VERSION}:*")
    assert private_redis.keys(f"{PREFIX}:ratelimit:*")


def test_rate_limits_hold_in_process_when_redis_is_unreachable(deployment):
    """Redis down from the start: the in-process window still limits each key, and nothing waits on Redis."""
    settings = ServingSettings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        api_keys=("key-one",),
        rate_limit_requests=3,
        rate_limit_window_s=60,
        preload=(),
    )
    with RunningServer(create_app(settings, deployment["resources"])) as server:
        headers = {"Authorization": "Bearer key-one"}
        started = time.monotonic()
        # Admitted requests reach validation (an empty list is a 400): only the gate is measured.
        statuses = [
            httpx.post(f"{server.url}/v1/embeddings", json={"model": "live", "input": []}, headers=headers).status_code
            for _ in range(4)
        ]
        assert statuses == [400, 400, 400, 429] and time.monotonic() - started < 2.0
        assert httpx.get(f"{server.url}/stats").json()["cache"]["redis_up"] is False
