"""Embedding texts for the API: normalize and hash as the pipeline does, then cache, then batch."""

from embedding_assets.core.text import content_hash, normalize_text
from serving.batcher import Encoded
from serving.cache import cache_key
from serving.errors import APIError
from serving.metrics import ServingMetrics
from serving.models import ServedModel


class EmbeddingService:
    def __init__(self, cache, prefix: str, metrics: ServingMetrics):
        self._cache = cache
        self._prefix = prefix
        self._metrics = metrics

    async def embed(
        self, model: ServedModel, texts: list[str], param: str = "input", workload: str = "online"
    ) -> list[Encoded]:
        """One result per text, in order; each distinct text reaches the model at most once."""
        normalized = [normalize_text(text) for text in texts]
        for index, text in enumerate(normalized):
            if not text:
                where = f"{param}[{index}]" if len(texts) > 1 else param
                raise APIError(400, f"{where} is empty (or only whitespace)", "empty_input", param)
        keys = [cache_key(self._prefix, model.spec.key, model.fingerprint, content_hash(text)) for text in normalized]
        distinct = dict(zip(keys, normalized))
        found = dict(zip(distinct, await self._cache.get_many(list(distinct))))
        missing = [key for key, entry in found.items() if entry is None]
        self._metrics.cache_lookups.labels("hit").inc(len(distinct) - len(missing))
        self._metrics.cache_lookups.labels("miss").inc(len(missing))
        if missing:
            computed = dict(zip(missing, await model.batchers[workload].submit([distinct[key] for key in missing])))
            refused = [(keys.index(key), entry.problem) for key, entry in computed.items() if entry.problem]
            if refused:
                index, (code, message) = min(refused)
                where = f"{param}[{index}]" if len(texts) > 1 else param
                raise APIError(400, f"{where} cannot be embedded: {message}", code, param)
            await self._cache.set_many(computed)
            found.update(computed)
        return [found[key] for key in keys]
