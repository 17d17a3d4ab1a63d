"""Which model serves a request, and its loaded encoder.

Names resolve on every request: a registry version key, or an alias (`live`) read from the
`aliases` table, so an alias switch or a rollback is followed without a restart. Encoders load
in the background; until one is ready its requests get 503 with Retry-After instead of waiting.
"""

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from embedding_assets.core.aliases import Alias, AliasReader
from embedding_assets.core.store import LanceStore
from gpu_ops.registry import ModelRegistry, ModelSpec, load_registry
from resources.model_registry import ModelRegistryResource
from serving.batcher import Encoded, MicroBatcher
from serving.errors import APIError, retry_after
from serving.metrics import ServingMetrics
from serving.settings import ServingSettings

LOAD_RETRY_S = 30.0


@dataclass
class ServedModel:
    spec: ModelSpec
    encoder: object
    fingerprint: str
    batcher: MicroBatcher
    load_seconds: float


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
        self._registry: tuple[float, ModelRegistry] | None = None
        self._aliases = AliasReader(store)

    def registry(self) -> ModelRegistry:
        """The registry file, parsed again only when it changed."""
        modified = os.stat(self._model_registry.registry_path).st_mtime
        if self._registry is None or self._registry[0] != modified:
            self._registry = (modified, load_registry(self._model_registry.registry_path))
        return self._registry[1]

    def resolve(self, name: str) -> tuple[str, Alias | None]:
        """(model version, the alias it came through) for a version key or an alias."""
        registry = self.registry()
        if name in registry.specs:
            return name, None
        alias = self._aliases.current(name)
        if alias is None:
            known = ", ".join(sorted(registry.specs)) or "none"
            raise APIError(
                404,
                f"The model '{name}' does not exist: use an alias such as 'live' or a registered version ({known})",
                "model_not_found",
                "model",
            )
        if alias.model_version not in registry.specs:
            raise APIError(
                503, f"alias '{name}' points at {alias.model_version}, which is not in the registry", "model_missing"
            )
        return alias.model_version, alias

    def loaded(self) -> dict[str, ServedModel]:
        return dict(self._models)

    def ready_model(self, version: str) -> ServedModel:
        """The loaded model, or 503 while it loads (a load starts on first demand)."""
        model = self._models.get(version)
        if model is not None:
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
            # One thread per model: its calls run one at a time, as batching intends.
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{spec.key}")
            batcher = MicroBatcher(
                lambda texts: encode_for_serving(encoder, spec, texts),
                executor,
                window_s=self._settings.batch_window_ms / 1000,
                max_items=self._settings.batch_max_items,
                max_tokens=self._settings.batch_max_tokens,
                on_batch=lambda items: self._metrics.record_batch(spec.key, items),
            )
            # The first call pays one-off costs (kernels, allocations) before real traffic does.
            encode_for_serving(encoder, spec, ["warm up"])
        except Exception as error:  # reported to callers as 503 with the reason, retried later
            with self._lock:
                self._failures[spec.key] = (time.monotonic(), f"{type(error).__name__}: {error}")
                self._loading.discard(spec.key)
            return
        seconds = time.monotonic() - started
        with self._lock:
            self._models[spec.key] = ServedModel(spec, encoder, spec.fingerprint(), batcher, seconds)
            self._loading.discard(spec.key)
        self._metrics.model_load_seconds.labels(spec.key).set(seconds)
        self._metrics.models_loaded.set(len(self._models))

    async def close(self) -> None:
        for model in self._models.values():
            await model.batcher.close()
