"""The model registry: which model versions exist and how to load each.

Entries are validated one by one, so a malformed entry is reported with its reason while
the others stay usable (a registry edit must never take down the versions already live).
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpu_ops.model_sources import resolve_model_source

VERSION_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
BACKENDS = ("sentence-transformers",)


class ModelSpec(BaseModel):
    """One model version. `key` names its partition and its table, so it is a slug."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    backend: Literal["sentence-transformers"]
    model_id: str
    source: str
    revision: str = "1"
    modality: Literal["text"] = "text"
    dim: int = Field(gt=0)
    max_tokens: int = Field(gt=8, description="the model window, special tokens included")
    window_overlap: int = Field(default=32, ge=0)
    max_document_tokens: int | None = Field(
        default=8192, gt=0, description="longer texts are quarantined; null chunks any length"
    )
    normalize: bool = True
    dtype: Literal["auto", "float32", "float16"] = "auto"

    @field_validator("key")
    @classmethod
    def _key_is_slug(cls, key: str) -> str:
        if not VERSION_KEY.match(key):
            raise ValueError(f"{key!r} is not a slug ([a-z0-9][a-z0-9._-]*): it names a partition and a LanceDB table")
        return key

    @property
    def window_tokens(self) -> int:
        """Content tokens per window: the window less [CLS] and [SEP]."""
        return self.max_tokens - 2

    def resolved_source(self, cache_dir: Path) -> str:
        """The local folder to load (see gpu_ops.model_sources); `cache_dir` holds assembled models."""
        try:
            return resolve_model_source(self.source, cache_dir)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"model {self.key} (source {self.source!r}): {error}") from error

    def fingerprint(self) -> str:
        """Everything that shapes this version's vectors: an edit of any of it needs a new key."""
        shaping = self.model_dump(exclude={"key", "model_id"})
        return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class ModelRegistry:
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Keys of entries that failed validation: present, but not usable until fixed.
    invalid_keys: set[str] = field(default_factory=set)

    def spec(self, key: str) -> ModelSpec:
        if key in self.specs:
            return self.specs[key]
        problems = [error for error in self.errors if error.startswith(f"{key}:")]
        detail = f": {problems[0]}" if problems else f"; registered: {', '.join(self.specs) or 'none'}"
        raise KeyError(f"model version {key!r} is not usable{detail}")


def parse_registry(document: dict | None) -> ModelRegistry:
    registry = ModelRegistry()
    entries = (document or {}).get("versions") or []
    if not isinstance(entries, list):
        registry.errors.append("registry: 'versions' must be a list of entries")
        return registry
    for position, entry in enumerate(entries, start=1):
        key = entry.get("key") if isinstance(entry, dict) else None
        label = key if isinstance(key, str) else f"entry {position}"
        if isinstance(key, str):
            registry.invalid_keys.add(key)
        if key in registry.specs:
            registry.errors.append(f"{label}: duplicate key (entry {position}); the first entry is kept")
            continue
        try:
            spec = ModelSpec.model_validate(entry)
        except ValidationError as error:
            reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in error.errors())
            registry.errors.append(f"{label}: {reasons}")
            continue
        registry.specs[spec.key] = spec
    registry.invalid_keys -= registry.specs.keys()
    return registry


def load_registry(path: str | Path) -> ModelRegistry:
    with open(path, encoding="utf-8") as handle:
        return parse_registry(yaml.safe_load(handle))
