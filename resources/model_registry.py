"""The model registry as a resource: specs from `models.yaml`, encoders loaded on demand."""

import threading
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import PrivateAttr

from gpu_ops.loading import load_encoder
from gpu_ops.registry import ModelRegistry, ModelSpec, load_registry


class ModelRegistryResource(ConfigurableResource):
    """Which model versions exist, and the loaded encoder of each (one load per run)."""

    registry_path: str
    # Where models that must be assembled (split zips) are unpacked once.
    model_cache_dir: str
    device: str = "auto"
    # 0 picks the device's default (see gpu_ops.local_encoder.DEFAULT_TOKEN_BUDGETS).
    token_budget: int = 0
    max_batch_items: int = 0

    _encoders: dict = PrivateAttr(default_factory=dict)
    # A run may start loading a model in the background (see change_job.py): one load per spec, never two.
    _loading: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def registry(self) -> ModelRegistry:
        return load_registry(self.registry_path)

    def spec(self, model_version: str) -> ModelSpec:
        return self.registry().spec(model_version)

    def encoder(self, spec: ModelSpec):
        with self._loading:
            if spec not in self._encoders:
                self._encoders[spec] = load_encoder(
                    spec,
                    Path(self.model_cache_dir),
                    self.device,
                    self.token_budget or None,
                    self.max_batch_items or None,
                )
            return self._encoders[spec]

    def loaded(self, model_version: str) -> tuple[ModelSpec, object]:
        """(spec, encoder) of a registered version, the pair the promotion gates compare."""
        spec = self.spec(model_version)
        return spec, self.encoder(spec)
