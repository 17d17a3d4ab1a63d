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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpu_ops.model_sources import resolve_model_source

VERSION_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
ENVIRONMENT_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A `source` of `random:<seed>`: the architecture with random weights from that seed (test models).
RANDOM_WEIGHTS = "random:"
# How a hosted model is called, not what it returns: editable under the same key.
CALL_SETTINGS = frozenset(
    {
        "api_key_env",
        "price_per_1k_tokens",
        "max_request_items",
        "max_request_tokens",
        "max_concurrent_requests",
        "max_retries",
        "request_timeout_s",
        "batch_api",
        "batch_poll_s",
        "batch_wait_s",
    }
)
# What a version is compared with, not what it returns: editable under the same key.
REVIEW_SETTINGS = frozenset({"fidelity_reference"})
# Fields added for newer backends and runtimes: they count in a fingerprint once set to anything but
# their default, so fingerprints recorded before they existed still match.
LATER_OPTIONAL_FIELDS = (
    "model_config_path",
    "base_url",
    "dimensions",
    "vector_precision",
    "runtime",
    "quantization",
    "pca_dims",
)


class ModelSpec(BaseModel):
    """One model version. `key` names its partition and its table, so it is a slug."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    backend: Literal["sentence-transformers", "open_clip", "openai", "model2vec"]
    # sentence-transformers: the model's name; open_clip: the architecture (e.g. ViT-B-32);
    # openai: the provider's model name (e.g. text-embedding-3-large).
    model_id: str
    # sentence-transformers: a folder, `package:` or `split-zip:`; open_clip: a pretrained tag
    # or a local checkpoint path; openai: unused (see base_url); model2vec: the sentence-transformers
    # model it is distilled from (any sentence-transformers source).
    source: str = ""
    revision: str = "1"
    # text: embeds texts only (image rows are skipped); multimodal: texts and images in one space.
    modality: Literal["text", "multimodal"] = "text"
    dim: int = Field(gt=0)
    max_tokens: int = Field(gt=8, description="the model window, special tokens included")
    window_overlap: int = Field(default=32, ge=0)
    max_document_tokens: int | None = Field(
        default=8192, gt=0, description="longer texts are quarantined; null chunks any length"
    )
    normalize: bool = True
    dtype: Literal["auto", "float32", "float16"] = "auto"
    # How the version's table stores its vectors. float16 halves storage and reads;
    # its rounding is measured in benchmarks/ (row 11). Changing it changes stored vectors: a new key.
    vector_precision: Literal["float32", "float16"] = "float32"
    # sentence-transformers only: what runs the weights. onnx: exported once from `source` into the cache
    # folder and run by ONNX Runtime on the CPU (see gpu_ops/onnx_export.py); quantization int8 quantizes
    # that export's weights dynamically, for this CPU.
    runtime: Literal["torch", "onnx"] = "torch"
    quantization: Literal["int8"] | None = None
    # model2vec only: the width PCA reduces the distilled token vectors to (None keeps the teacher's).
    pca_dims: int | None = Field(default=None, gt=0)
    # A version this one should agree with (the same weights on another runtime): the mean cosine of their
    # vectors on shared content is reported by the vector_fidelity check.
    fidelity_reference: str | None = None
    # open_clip only: an open_clip model config (JSON) in the repo, registered before loading, for
    # architectures open_clip does not ship (the small test model).
    model_config_path: str | None = None
    # openai only: the OpenAI-compatible endpoint, the key's environment variable (never the key),
    # the output width asked for, the price, and the provider's limits.
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    dimensions: int | None = Field(default=None, gt=0)
    price_per_1k_tokens: float = Field(default=0.0, ge=0)
    max_request_items: int = Field(default=2048, gt=0)
    max_request_tokens: int = Field(default=300_000, gt=0)
    max_concurrent_requests: int = Field(default=4, gt=0)
    max_retries: int = Field(default=6, ge=0)
    request_timeout_s: float = Field(default=60.0, gt=0)
    # openai only: backfills go through the provider's Batch API (half the price, results within a day).
    batch_api: bool = False
    # How often a batch is polled, and how long one run waits for it before failing (its id is kept: a
    # rerun resumes it).
    batch_poll_s: float = Field(default=30.0, gt=0)
    batch_wait_s: float = Field(default=86_400.0, gt=0)

    @field_validator("key")
    @classmethod
    def _key_is_slug(cls, key: str) -> str:
        if not VERSION_KEY.match(key):
            raise ValueError(f"{key!r} is not a slug ([a-z0-9][a-z0-9._-]*): it names a partition and a LanceDB table")
        return key

    @model_validator(mode="after")
    def _backend_fields(self) -> "ModelSpec":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("an openai model needs base_url (the OpenAI-compatible endpoint)")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} is not an http(s) URL")
        if self.backend == "openai" and self.modality != "text":
            raise ValueError("an openai model embeds texts only: modality must be text")
        if not ENVIRONMENT_VARIABLE.match(self.api_key_env):
            # Refused without echoing it: a value that is no variable name may be the key itself.
            raise ValueError("api_key_env must name an environment variable that holds the key, not the key")
        if self.backend != "openai" and not self.source:
            raise ValueError(f"a {self.backend} model needs source (where its weights are)")
        if self.backend == "open_clip" and self.modality != "multimodal":
            raise ValueError("an open_clip model embeds images and texts in one space: modality must be multimodal")
        if self.batch_api and self.backend != "openai":
            raise ValueError("batch_api is a hosted provider's option: only an openai model can use it")
        if self.dimensions is not None and self.dimensions != self.dim:
            raise ValueError(f"dimensions {self.dimensions} asks the provider for a width other than dim {self.dim}")
        self._runtime_fields()
        return self

    def _runtime_fields(self) -> None:
        if self.runtime == "onnx" and self.backend != "sentence-transformers":
            raise ValueError("runtime onnx runs sentence-transformers models only")
        if self.runtime == "onnx" and self.dtype == "float16":
            raise ValueError("runtime onnx runs on the CPU in float32 (or int8): dtype float16 does not apply")
        if self.quantization and self.runtime != "onnx":
            raise ValueError("quantization int8 is an ONNX Runtime option: set runtime onnx")
        if self.backend == "model2vec" and self.modality != "text":
            raise ValueError("a model2vec model embeds texts only: modality must be text")
        if self.pca_dims is not None and (self.backend != "model2vec" or self.pca_dims != self.dim):
            raise ValueError("pca_dims is a model2vec option and must equal dim")
        if self.fidelity_reference == self.key:
            raise ValueError("fidelity_reference names another version, not this one")

    @property
    def random_weights(self) -> bool:
        return self.source.startswith(RANDOM_WEIGHTS)

    @property
    def runs_on_cpu(self) -> bool:
        """ONNX Runtime (its CPU build) and static models run on the CPU whatever the device setting."""
        return self.runtime == "onnx" or self.backend == "model2vec"

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

    def vector_settings(self) -> dict:
        """Everything that shapes this version's vectors: an edit of any of it needs a new key.

        A local model's `model_id` is only its name (its `source` picks the weights), so it is not here.
        """
        unset = {name for name in LATER_OPTIONAL_FIELDS if getattr(self, name) == type(self).model_fields[name].default}
        shaping = self.model_dump(exclude={"key", "model_id", *CALL_SETTINGS, *REVIEW_SETTINGS, *unset})
        if self.backend == "openai":
            # The provider's model name is what picks the weights.
            shaping["model_id"] = self.model_id
        return shaping

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.vector_settings(), sort_keys=True).encode()).hexdigest()[:16]

    def settings_changed_since(self, recorded: dict) -> list[str]:
        """`field: recorded -> now` for each vector setting that differs from `recorded`."""
        current = json.loads(json.dumps(self.vector_settings()))
        return [
            f"{name}: {recorded.get(name)!r} -> {current.get(name)!r}"
            for name in sorted(recorded.keys() | current.keys())
            if recorded.get(name) != current.get(name)
        ]


@dataclass
class ModelRegistry:
    specs: dict[str, ModelSpec] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # Keys of entries that failed validation: present, but not usable until fixed.
    invalid_keys: set[str] = field(default_factory=set)
    # Entries whose key could not be read at all (no key, not a mapping, no list of versions):
    # any version may be the one they meant.
    unnamed_entries: int = 0

    @property
    def named_keys(self) -> set[str]:
        """Every version key the file names, valid or not: a typo in an entry must not retire its version."""
        return set(self.specs) | self.invalid_keys

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
        registry.unnamed_entries += 1
        return registry
    for position, entry in enumerate(entries, start=1):
        key = entry.get("key") if isinstance(entry, dict) else None
        # A key YAML read as a number (`key: 2024`) still names a version.
        key = str(key) if isinstance(key, int | float) and not isinstance(key, bool) else key
        label = key if isinstance(key, str) else f"entry {position}"
        if isinstance(key, str):
            registry.invalid_keys.add(key)
        else:
            registry.unnamed_entries += 1
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
