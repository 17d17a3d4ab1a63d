"""Turning representatives' contents into vectors: what reaches the model, in what order, and what it refused.

Nothing here writes: a group's vectors come back by content with the quarantine entries and model
counters it produced, and the commit loop writes them, so a group is committed whole or not at all.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from embedding_assets.core.documents import images_by_content, iter_texts_by_content, texts_by_content
from embedding_assets.core.embedding_run.plan import PlannedDocument, by_representative
from embedding_assets.core.images import ImageRefused, open_image
from embedding_assets.core.quarantine import QuarantineEntry
from embedding_assets.core.store import LanceStore
from gpu_ops.encoder import EncodedBatch, Encoder
from gpu_ops.registry import ModelSpec


@dataclass
class EncodedGroup:
    # content -> its vectors (image first, then its text's windows), for the contents the model did not botch.
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    held: list[QuarantineEntry] = field(default_factory=list)
    batches: int = 0
    tokens: int = 0
    # content -> (text windows, images) of each content sent to the model, so a run over several shards
    # can count each shard's own share.
    sent: dict[str, tuple[int, int]] = field(default_factory=dict)


class LazyEncoder:
    """Loaded on first use: a shard with nothing new to embed never loads the model."""

    def __init__(self, load: Callable):
        self._load = load
        self.loaded = None

    def __call__(self):
        if self.loaded is None:
            self.loaded = self._load()
        return self.loaded


def encoding_order(
    store: LanceStore, todo: list[PlannedDocument]
) -> tuple[list[str], dict[str, list[PlannedDocument]]]:
    """The contents to encode, shortest first (for tight token-budget batches), and the documents each serves."""
    grouped = by_representative(todo)
    lengths = {content: len(text) for part in iter_texts_by_content(store, grouped) for content, text in part.items()}
    # A representative that left the corpus since dedup ran: its documents embed their own content.
    orphaned = [p for content in grouped.keys() - lengths.keys() for p in grouped.pop(content)]
    for planned in orphaned:
        grouped.setdefault(planned.content_hash, []).append(
            replace(planned, representative_hash=planned.content_hash, dup_kind="self")
        )
    own = texts_by_content(store, {p.content_hash for p in orphaned} - lengths.keys())
    lengths.update({content: len(text) for content, text in own.items()})
    return sorted(lengths, key=lambda content: (lengths[content], content)), grouped


def encode_group(
    store: LanceStore,
    spec: ModelSpec,
    encoder: Callable[[], Encoder],
    group: list[str],
    documents_of: dict[str, list[PlannedDocument]],
) -> EncodedGroup:
    """Vectors for `group`'s contents; `encoder()` is called only when there is something to encode."""
    result = EncodedGroup()

    def hold(content: str, reason: str, detail: str) -> None:
        result.held += [QuarantineEntry(p.doc_id, reason, detail, p.content_hash) for p in documents_of[content]]

    texts = texts_by_content(store, group)
    with_text = [content for content in group if texts.get(content)]
    spans = encoder().token_spans([texts[content] for content in with_text]) if with_text else []
    windows, counts, window_owners, too_long = [], [], [], set()
    limit = spec.max_document_tokens
    for content, token_spans in zip(with_text, spans):
        if limit is not None and len(token_spans) > limit:
            hold(content, "too_many_tokens", f"{len(token_spans):,} tokens, limit {limit:,}")
            too_long.add(content)
            continue
        pieces = encoder().windows(texts[content], token_spans)
        stride = spec.window_tokens - spec.window_overlap
        windows += pieces
        counts += [min(spec.window_tokens, len(token_spans) - k * stride) for k in range(len(pieces))]
        window_owners += [content] * len(pieces)
    parts, image_owners = [], []
    if spec.modality == "multimodal":
        images = images_by_content(store, [c for c in group if c in texts and c not in too_long])
        parts.append(encoder().encode_images(_opened(images, image_owners, hold)))
        # A pair whose image would not open is held whole: its caption alone is not the document.
        refused = images.keys() - set(image_owners)
        kept = [index for index, content in enumerate(window_owners) if content not in refused]
        windows, counts = [windows[i] for i in kept], [counts[i] for i in kept]
        window_owners = [window_owners[i] for i in kept]
    if windows:
        parts.append(encoder().encode_texts(windows, counts))
    owners = image_owners + window_owners
    if not owners:
        return result
    for content in image_owners:
        result.sent[content] = (0, 1)
    for content in window_owners:
        windows, images = result.sent.get(content, (0, 0))
        result.sent[content] = (windows + 1, images)
    encoded = _joined(parts)
    result.batches = encoded.batches
    result.tokens = encoded.tokens
    result.vectors = _validated(spec, encoded, owners, hold)
    return result


def _opened(images: dict[str, bytes], owners: list[str], hold: Callable[[str, str, str], None]):
    """Each image opened (upright, RGB) as the encoder asks for it, so one decoded photo is in memory
    at a time; `owners` gets the content of each image yielded, and one that no longer opens is held."""
    for content, data in images.items():
        try:
            image = open_image(data)
        except ImageRefused as refused:
            hold(content, refused.problem.reason, refused.problem.detail)
            continue
        owners.append(content)
        yield image


def _joined(parts: list[EncodedBatch]) -> EncodedBatch:
    """Several encoder calls' results as one, in order (refused inputs' indices shifted to match)."""
    parts = [part for part in parts if len(part.vectors)]
    failures, offset = {}, 0
    for part in parts:
        failures |= {offset + index: failure for index, failure in part.failures.items()}
        offset += len(part.vectors)
    vectors = np.concatenate([part.vectors for part in parts])
    return EncodedBatch(vectors, sum(part.batches for part in parts), sum(part.tokens for part in parts), failures)


def _validated(
    spec: ModelSpec, encoded: EncodedBatch, owners: list[str], hold: Callable[[str, str, str], None]
) -> dict[str, np.ndarray]:
    """Vectors by content; a content with a refused window (`failures`) or a botched vector is held."""
    grouped: dict[str, list[int]] = {}
    for index, content in enumerate(owners):
        grouped.setdefault(content, []).append(index)
    failures = encoded.failures
    accepted = {}
    for content, indices in grouped.items():
        block = encoded.vectors[indices]
        refused = [failures[i] for i in indices if i in failures] if failures else []
        if refused:
            reason, detail = refused[0]
        elif block.shape[1] != spec.dim:
            reason, detail = (
                "wrong_dimension",
                f"the model returned {block.shape[1]}-d vectors, registry dim {spec.dim}",
            )
        elif not np.isfinite(block).all():
            reason, detail = "non_finite_vector", f"{int((~np.isfinite(block)).sum())} NaN or infinite values"
        else:
            accepted[content] = block
            continue
        hold(content, reason, detail)
    return accepted
