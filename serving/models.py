"""Which model serves a request, and its loaded encoder.

Names resolve on every request: an alias (`live`) read from the `aliases` table, with its canary
from `canaries`, or a version key, so an alias switch, a canary's move or a rollback is followed
without a restart. Only what an alias pins or canaries, and versions the operator lists as servable,
may be asked for: anything else would load a model (never unloaded) per name a caller invents.
Encoders load in the background; until one is ready its requests get 503 with Retry-After.

Each model has two lanes: online (few inputs) and bulk (many inputs, a bulk key or header). Each
lane has its own encoder instance and thread; bulk texts go in small chunks, each started only once
no online work waits (for at most `max_yield_s`), so bulk never holds the model while online queues.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedding_assets.core.aliases import LIVE_ALIAS, Alias, AliasReader
from embedding_assets.core.canary import Canary, routed_to_canary
from embedding_assets.core.store import LanceStore
from gpu_ops.loading import load_encoder
from gpu_ops.registry import ModelRegistry, ModelSpec, load_registry
from resources.model_registry import ModelRegistryResource
from serving.batcher import Encoded, MicroBatcher
from serving.errors import APIError, retry_after
from serving.metrics import ServingMetrics
from serving.settings import ServingSettings

LOAD_RETRY_S = 30.0
# A loaded model nothing serves any more is unloaded after this long unused: the rollback window.
UNLOAD_IDLE_S = 30 * 60.0


WORKLOADS = ("online", "bulk")


@dataclass
class ServedModel:
    spec: ModelSpec
    encoder: object
    fingerprint: str
    batchers: dict[str, MicroBatcher]
    load_seconds: float


@dataclass(frozen=True)
class Route:
    """Where one request goes: a version, and the table version it searches (None: the newest gated one)."""

    model_version: str
    alias: str | None = None
    pin: Alias | Canary | None = None
    # Routed to the alias's canary; `live` is then the alias's own pin (for shadow comparisons).
    canary: bool = False
    live: Alias | None = None


def encode_for_serving(encoder, spec: ModelSpec, texts: list[str]) -> list[Encoded]:
    """Vectors of whole texts, exactly as the pipeline embeds a text of one window.

    A text longer than the model's window is refused rather than silently truncated: the
    pipeline would have split it into windows, and one vector could not stand for them.
    """
    counts = [len(spans) for spans in encoder.token_spans(texts)]
    too_long = f"model {spec.key} embeds at most {spec.window_tokens} tokens per input"
    results = [Encoded(None, count, ("input_too_long", f"{count} tokens; {too_long}")) for count in counts]
    fits = [index for index, count in enumerate(counts) if count <= spec.window_tokens]
    if not fits:
        return results
    encoded = encoder.encode_texts([texts[i] for i in fits], [counts[i] for i in fits])
    for position, (index, vector) in enumerate(zip(fits, encoded.vectors)):
        if position in encoded.failures:
            reason, detail = encoded.failures[position]
            results[index] = Encoded(None, counts[index], ("input_rejected", f"{reason}: {detail}"))
        elif vector.shape[0] != spec.dim or not np.isfinite(vector).all():
            results[index] = Encoded(None, counts[index], ("bad_vector", f"model {spec.key} returned a bad vector"))
        else:
            results[index] = Encoded(vector, counts[index])
    return results


class ModelPool:
    def __init__(
        self,
        model_registry: ModelRegistryResource,
        store: LanceStore,
        settings: ServingSettings,
        metrics: ServingMetrics,
    ):
        self._model_registry = model_registry
        self._settings = settings
        self._metrics = metrics
        self._lock = threading.Lock()
        self._models: dict[str, ServedModel] = {}
        self._loading: set[str] = set()
        self._failures: dict[str, tuple[float, str]] = {}
        self._last_used: dict[str, float] = {}
        self._registry: tuple[float, ModelRegistry] | None = None
        self._aliases = AliasReader(store)

    def registry(self) -> ModelRegistry:
        """The registry file, parsed again only when it changed."""
        modified = os.stat(self._model_registry.registry_path).st_mtime
        if self._registry is None or self._registry[0] != modified:
            self._registry = (modified, load_registry(self._model_registry.registry_path))
        return self._registry[1]

    def resolve(self, name: str, caller: str = "") -> Route:
        """The route of a request naming `name` (an alias or a servable version key), sticky by `caller`."""
        registry = self.registry()
        aliases, canaries = self._aliases.all()
        alias = aliases.get(name)
        if alias is not None:
            canary = canaries.get(name)
            if routed_to_canary(canary, caller) and canary.model_version in registry.specs:
                return Route(canary.model_version, name, canary, True, alias)
            if alias.model_version not in registry.specs:
                raise APIError(
                    503,
                    f"alias '{name}' points at {alias.model_version}, which is not in the registry",
                    "model_missing",
                )
            return Route(alias.model_version, name, alias)
        servable = {a.model_version for a in aliases.values()} | {c.model_version for c in canaries.values()}
        if name in registry.specs and (name in servable or name in self._settings.servable_versions):
            return Route(name)
        if name == LIVE_ALIAS:
            raise APIError(
                404,
                "no version is live yet: build and promote an index first (`make demo`, or materialize "
                "live_index in the UI), then retry",
                "model_not_found",
                "model",
            )
        listed = (servable | set(self._settings.servable_versions)) & set(registry.specs)
        offered = [*sorted(aliases), *sorted(listed)]
        hint = f"; served here: {', '.join(offered)}" if offered else ""
        if name in registry.specs:
            message = (
                f"model version '{name}' is not served: ask for an alias such as 'live' (or its canary), or have "
                f"the operator list it in SERVING_VERSIONS{hint}"
            )
        else:
            message = f"the model '{name}' does not exist{hint}"
        raise APIError(404, message, "model_not_found", "model")

    def canary(self, name: str) -> Canary | None:
        return self._aliases.canary(name)

    def loaded(self) -> dict[str, ServedModel]:
        return dict(self._models)

    def ready_model(self, version: str) -> ServedModel:
        """The loaded model, or 503 while it loads (a load starts on first demand)."""
        model = self._models.get(version)
        if model is not None:
            self._last_used[version] = time.monotonic()
            return model
        failure = self.start_loading(version)
        if failure:
            raise APIError(
                503,
                f"model {version} failed to load: {failure}",
                "model_load_failed",
                headers=retry_after(LOAD_RETRY_S),
            )
        raise APIError(503, f"model {version} is loading; retry shortly", "model_loading", headers=retry_after(2))

    def start_loading(self, version: str) -> str | None:
        """Start loading `version` unless it is loaded or loading; returns a recent load failure."""
        with self._lock:
            if version in self._models or version in self._loading:
                return None
            failed = self._failures.get(version)
            if failed and time.monotonic() - failed[0] < LOAD_RETRY_S:
                return failed[1]
            self._loading.add(version)
        threading.Thread(target=self._load, args=(self.registry().spec(version),), daemon=True).start()
        return None

    def _load(self, spec: ModelSpec) -> None:
        started = time.monotonic()
        try:
            encoder = self._model_registry.encoder(spec)
            online = self._batcher(spec, "online", lambda texts: encode_for_serving(encoder, spec, texts))
            bulk = self._batcher(spec, "bulk", self._lazy_bulk_encode(spec), yield_to=online)
            # The first call pays one-off costs (kernels, allocations) before real traffic does.
            encode_for_serving(encoder, spec, ["warm up"])
        except Exception as error:  # reported to callers as 503 with the reason, retried later
            with self._lock:
                self._failures[spec.key] = (time.monotonic(), f"{type(error).__name__}: {error}")
                self._loading.discard(spec.key)
            return
        seconds = time.monotonic() - started
        with self._lock:
            batchers = {"online": online, "bulk": bulk}
            self._models[spec.key] = ServedModel(spec, encoder, spec.fingerprint(), batchers, seconds)
            self._last_used[spec.key] = time.monotonic()
            self._loading.discard(spec.key)
        self._metrics.model_load_seconds.labels(spec.key).set(seconds)
        self._metrics.models_loaded.set(len(self._models))

    def _batcher(self, spec: ModelSpec, workload: str, encode, yield_to: MicroBatcher | None = None) -> MicroBatcher:
        """One lane of a model: its own thread (its calls run one at a time, as batching intends)."""
        bulk = workload == "bulk"
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{spec.key}-{workload}")
        return MicroBatcher(
            encode,
            executor,
            window_s=self._settings.batch_window_ms / 1000,
            max_items=self._settings.bulk_chunk_items if bulk else self._settings.batch_max_items,
            max_tokens=self._settings.batch_max_tokens,
            on_batch=lambda items: self._metrics.record_batch(spec.key, items, workload),
            on_wait=self._metrics.queue_wait_seconds.labels(workload).observe,
            yield_to=yield_to,
        )

    def _lazy_bulk_encode(self, spec: ModelSpec):
        """Bulk's own encoder instance, loaded on its thread at the first bulk call: a tokenizer is not
        safe to share between threads, and a server with no bulk traffic loads nothing more."""
        loaded = []

        def encode(texts: list[str]) -> list[Encoded]:
            if not loaded:
                registry = self._model_registry
                loaded.append(
                    load_encoder(
                        spec,
                        Path(registry.model_cache_dir),
                        registry.device,
                        registry.token_budget or None,
                        registry.max_batch_items or None,
                    )
                )
            return encode_for_serving(loaded[0], spec, texts)

        return encode

    def unload_unservable(self, idle_s: float = UNLOAD_IDLE_S) -> list[ServedModel]:
        """Forget loaded models that nothing serves any more (a cleared canary, a version switched away
        from) and that no request used for `idle_s` (a rollback within that window finds its model
        warm); returns them, so their lanes are closed once requests already in them are done."""
        aliases, canaries = self._aliases.all()
        keep = {a.model_version for a in aliases.values()} | {c.model_version for c in canaries.values()}
        keep |= set(self._settings.servable_versions)
        now = time.monotonic()
        with self._lock:
            idle = [v for v in self._models if v not in keep and now - self._last_used.get(v, 0.0) > idle_s]
            dropped = [self._models.pop(version) for version in idle]
        self._metrics.models_loaded.set(len(self._models))
        return dropped

    def queued(self, workload: str) -> int:
        return sum(model.batchers[workload].queued() for model in self._models.values())

    async def close(self) -> None:
        for model in self._models.values():
            for batcher in model.batchers.values():
                await batcher.close()
