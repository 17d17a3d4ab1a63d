"""A static-embedding model (`backend: model2vec`): one vector per token, a text's vector their weighted mean.

It is distilled once, on the CPU, from the sentence-transformers model its `source` names (every
token of the teacher's vocabulary through the teacher, then PCA to `pca_dims` and Zipf weighting)
into the cache folder: no download, and the same vectors on every machine. It is a model of its own,
not a faster runtime of its teacher: its recall is measured by the same gates as any version's.
Encoding is a table lookup, so batches are far larger than a transformer's.
"""

from pathlib import Path

import numpy as np

from gpu_ops.model_sources import build_once, derived_model_folder
from gpu_ops.registry import ModelSpec
from gpu_ops.text_encoder import TokenizedTextEncoder

MODEL_FILE = "model.safetensors"
# A lookup costs nothing per token: batches are bounded only to keep memory flat.
STATIC_TOKEN_BUDGET = 1 << 20
STATIC_MAX_BATCH_ITEMS = 4_096


def distilled_model(source_folder: str, cache_dir: Path, pca_dims: int | None) -> Path:
    """The model2vec model distilled from `source_folder`, built once; the CPU keeps it the same everywhere."""

    def distill_into(target: Path) -> None:
        from model2vec.distill import distill

        distill(model_name=source_folder, pca_dims=pca_dims, device="cpu").save_pretrained(str(target))

    variant = f"pca-{pca_dims}" if pca_dims else "full-width"
    return build_once(derived_model_folder(cache_dir, "model2vec", source_folder) / variant, distill_into, MODEL_FILE)


class StaticEncoder(TokenizedTextEncoder):
    """The distilled model2vec model, on the CPU (a lookup needs no accelerator)."""

    def __init__(self, spec: ModelSpec, cache_dir: Path, token_budget: int | None, max_batch_items: int | None):
        import model2vec
        from model2vec import StaticModel
        from transformers import PreTrainedTokenizerFast

        super().__init__(spec, "cpu", token_budget or STATIC_TOKEN_BUDGET, max_batch_items or STATIC_MAX_BATCH_ITEMS)
        self.model_path = distilled_model(spec.resolved_source(cache_dir), cache_dir, spec.pca_dims)
        self.model = StaticModel.from_pretrained(self.model_path, normalize=False)
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=self.model.tokenizer)
        self.runtime = f"model2vec {model2vec.__version__} (static, distilled into {self.model_path})"

    def metadata(self) -> dict:
        return {**super().metadata(), "runtime": self.runtime}

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(
            texts, max_length=self.spec.max_tokens, batch_size=len(texts), use_multiprocessing=False
        )
        return self._as_output(vectors)
