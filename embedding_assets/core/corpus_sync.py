"""The corpus stage: bring one shard of `documents` in line with the source.

Only what changed is written; a document gone from the source becomes a tombstone
(`deleted = true`) so later stages can remove its vectors. A source that could not be read
whole never produces deletions, and a run that would tombstone more than `MassDeleteGuard`
allows fails before its first tombstone unless explicitly allowed. A document is a text, an
image, or a pair (an image with its caption); images pass the intake checks of `images.py`
here, once, before anything embeds them.
"""

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa

from embedding_assets.core.documents import live_doc_ids
from embedding_assets.core.images import ImageProblem, find_image_problem
from embedding_assets.core.quarantine import QuarantineEntry, replace_quarantine
from embedding_assets.core.schemas import DOCUMENTS_SCHEMA, SOURCE_FILES_SCHEMA
from embedding_assets.core.sharding import shard_of, shard_resolver
from embedding_assets.core.sources import FileVersions, SourceDocument, SourceRecord, SourceRejection, SourceUnchanged
from embedding_assets.core.store import LanceStore, scan, sql_in, sql_literal, upsert
from embedding_assets.core.text import TextProblem, content_hash, find_text_problem, normalize_text

WRITE_BATCH_ROWS = 4_096
# One pass over the source syncs shards holding at most this many documents together: a change that
# touches every shard reads the source once up to this corpus size, and what a pass keeps in memory (the
# ids and hashes of its shards' documents) stays bounded beyond it.
SYNC_PASS_DOCUMENTS = 500_000
# Image bytes written per batch: a few hundred photos, not thousands of 10 MB files, in memory at once.
WRITE_BATCH_BYTES = 64 << 20


@dataclass
class CorpusSyncStats:
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    quarantined: int = 0
    quarantine_reasons: Counter = field(default_factory=Counter)
    modalities: Counter = field(default_factory=Counter)
    source_complete: bool = True
    # Why the read was not provably whole (the details of the rejections that broke it).
    source_problems: list[str] = field(default_factory=list)

    @property
    def live(self) -> int:
        return self.added + self.changed + self.unchanged


class MassDeleteRefused(RuntimeError):
    """A run would mark more of a shard deleted than `MassDeleteGuard` allows; nothing was tombstoned."""


@dataclass(frozen=True)
class MassDeleteGuard:
    """How many of a shard's live documents one run may mark deleted without an explicit override.

    A source that lost documents by mistake (a half-synced folder, the wrong file) looks whole to
    every reader; only the size of the loss gives it away. The floor keeps small shards workable.
    """

    max_share: float = 0.10
    floor: int = 5

    def allows(self, deletions: int, live: int) -> bool:
        return deletions <= max(self.floor, self.max_share * live)

    def refusal(self, shard: str, gone: list[str], live: int) -> str:
        examples = ", ".join(sorted(gone)[:5]) + (", ..." if len(gone) > 5 else "")
        return (
            f"shard {shard}: this run would mark {len(gone)} of its {live} live documents deleted "
            f"({len(gone) / max(live, 1):.0%}), more than the {self.max_share:.0%} (or {self.floor} documents, "
            f"whichever is more) allowed at once, so nothing was marked deleted (e.g. {examples}). "
            "If the source is wrong, restore it and rerun. If these documents really left the source, "
            "rerun the corpus with the run config `allow_mass_delete: true` "
            "(`make demo ALLOW_MASS_DELETE=1` on the command line)"
        )


@dataclass(frozen=True)
class ClassifiedRecord:
    """A source record, either refused (with why) or accepted (normalized and content-hashed)."""

    record: SourceRecord
    refusal: QuarantineEntry | None = None
    # The normalized text, or an image's normalized caption ("" for an image alone).
    normalized: str = ""
    content_hash: str = ""
    modality: str = "text"

    @property
    def unchanged(self) -> bool:
        """A file the source did not read again: its live document stands as stored."""
        return isinstance(self.record, SourceUnchanged)

    @property
    def breaks_source(self) -> bool:
        return isinstance(self.record, SourceRejection) and self.record.whole_source


def document_content_hash(normalized: str, image: bytes | None) -> str:
    """sha256 of the normalized text, of an image's raw bytes, or of both for a pair (as the hash of the
    two hashes, so no other split of the same bytes into image and caption collides with it)."""
    if image is None:
        return content_hash(normalized)
    if not normalized:
        return content_hash(image)
    return content_hash(bytes.fromhex(content_hash(image)) + bytes.fromhex(content_hash(normalized)))


def _problem(record: SourceDocument) -> TextProblem | ImageProblem | None:
    if record.image is None:
        return find_text_problem(record.text)
    # A blank caption is no caption: the image alone is still worth embedding.
    return find_image_problem(record.image) or (find_text_problem(record.text) if record.text.strip() else None)


def classify(records: Iterable[SourceRecord]) -> Iterator[ClassifiedRecord]:
    for record in records:
        if isinstance(record, SourceUnchanged):
            yield ClassifiedRecord(record)
            continue
        if isinstance(record, SourceRejection):
            refusal = QuarantineEntry(record.doc_id, record.reason, record.detail, source_uri=record.source_uri)
            yield ClassifiedRecord(record, refusal)
            continue
        problem = _problem(record)
        if problem:
            refusal = QuarantineEntry(record.doc_id, problem.reason, problem.detail, source_uri=record.source_uri)
            yield ClassifiedRecord(record, refusal)
            continue
        normalized = normalize_text(record.text)
        modality = "text" if record.image is None else ("pair" if normalized else "image")
        yield ClassifiedRecord(
            record,
            normalized=normalized,
            content_hash=document_content_hash(normalized, record.image),
            modality=modality,
        )


def _document_row(item: ClassifiedRecord, shard: str, now: datetime) -> dict:
    return {
        "doc_id": item.record.doc_id,
        "shard": shard,
        "modality": item.modality,
        "title": item.record.title,
        "text": item.normalized,
        "image": item.record.image,
        "source_uri": item.record.source_uri,
        "content_hash": item.content_hash,
        "updated_at": now,
        "deleted": False,
    }


def known_file_versions(store: LanceStore, shards: list[str]) -> FileVersions:
    """doc_id -> the file version each live document of `shards` was read from (folders and S3 prefixes;
    nothing for other sources, at the cost of one empty scan)."""
    versions = scan(store.table("source_files"), sql_in("shard", shards), ["doc_id", "version"])
    known = dict(zip(versions.column("doc_id").to_pylist(), versions.column("version").to_pylist()))
    live = live_doc_ids(store, known)
    return {doc_id: version for doc_id, version in known.items() if doc_id in live}


def _record_versions(store: LanceStore, rows: list[dict]) -> None:
    if rows:
        upsert(store.table("source_files"), pa.Table.from_pylist(rows, schema=SOURCE_FILES_SCHEMA), on="doc_id")


def shard_passes(store: LanceStore, shards: list[str], budget: int = SYNC_PASS_DOCUMENTS) -> list[list[str]]:
    """`shards` in groups whose stored documents add up to at most `budget` (a larger shard goes alone)."""
    table = store.table("documents")
    passes: list[list[str]] = []
    held = budget
    for shard in shards:
        documents = table.count_rows(f"shard = {sql_literal(shard)}")
        if not passes or held + documents > budget:
            passes.append([])
            held = 0
        passes[-1].append(shard)
        held += documents
    return passes


def sync_corpus_shard(
    store: LanceStore,
    records: Iterable[SourceRecord],
    shard: str,
    now: datetime,
    guard: MassDeleteGuard | None = MassDeleteGuard(),
) -> CorpusSyncStats:
    """Bring the shard in line with `records`; `guard=None` allows any number of deletions."""
    return sync_corpus_shards(store, records, [shard], now, guard)[shard]


def sync_corpus_shards(
    store: LanceStore,
    records: Iterable[SourceRecord],
    shards: list[str],
    now: datetime,
    guard: MassDeleteGuard | None = MassDeleteGuard(),
) -> dict[str, CorpusSyncStats]:
    """Bring `shards` in line with `records` in one pass over them (a change touching every shard reads
    the source once, not once per shard); records of other shards are skipped. Each shard's deletions
    are checked against `guard` before any shard's are applied."""
    table = store.table("documents")
    wanted = set(shards)
    shard_for = shard_resolver(shards)
    columns = ["doc_id", "content_hash", "title", "deleted", "modality"]
    rows = scan(table, sql_in("shard", wanted), columns).to_pylist()
    existing = {row["doc_id"]: (row["content_hash"], row["title"], row["deleted"]) for row in rows}
    stored_modality = {row["doc_id"]: row["modality"] for row in rows}
    versions: list[dict] = []
    stats = {shard: CorpusSyncStats() for shard in shards}
    seen: set[str] = set()
    pending: list[dict] = []
    pending_bytes = 0
    quarantine: dict[str, list[QuarantineEntry]] = {shard: [] for shard in shards}
    # Documents refused on their own merits; a failed read (a rejection that breaks the source) deletes nothing.
    refused: set[str] = set()

    for item in classify(records):
        shard = shard_for(item.record.doc_id)
        if item.breaks_source:
            for shard_stats in stats.values():
                shard_stats.source_complete = False
                shard_stats.source_problems.append(f"{item.record.reason}: {item.record.detail}")
            # A source-wide failure reaches every shard; the shard of its name records it.
            if shard_of(item.record.doc_id) in wanted:
                quarantine[shard_of(item.record.doc_id)].append(item.refusal)
            continue
        if shard not in wanted:
            continue
        if item.unchanged:
            seen.add(item.record.doc_id)
            stats[shard].unchanged += 1
            stats[shard].modalities[stored_modality[item.record.doc_id]] += 1
            continue
        if item.refusal:
            quarantine[shard].append(item.refusal)
            refused.add(item.record.doc_id)
            continue
        record = item.record
        seen.add(record.doc_id)
        stats[shard].modalities[item.modality] += 1
        row = _document_row(item, shard, now)
        if record.version is not None:
            versions.append({"doc_id": record.doc_id, "shard": shard, "version": record.version})
        previous = existing.get(record.doc_id)
        if previous is None:
            stats[shard].added += 1
        elif previous == (row["content_hash"], row["title"], False):
            stats[shard].unchanged += 1
            continue
        else:
            stats[shard].changed += 1
        pending.append(row)
        pending_bytes += len(record.image or b"")
        if len(pending) >= WRITE_BATCH_ROWS or pending_bytes >= WRITE_BATCH_BYTES:
            upsert(table, pa.Table.from_pylist(pending, schema=DOCUMENTS_SCHEMA), on="doc_id")
            pending.clear()
            pending_bytes = 0
    upsert(table, pa.Table.from_pylist(pending, schema=DOCUMENTS_SCHEMA), on="doc_id")
    # After the documents: a version names a file whose document is stored, never one still to write.
    _record_versions(store, versions)

    # A refused document keeps no vectors either: it leaves the live set like a deleted one.
    gone: dict[str, list[str]] = {shard: [] for shard in shards}
    live_before = dict.fromkeys(shards, 0)
    for doc_id, (_, _, deleted) in existing.items():
        shard = shard_for(doc_id)
        live_before[shard] += not deleted
        if not deleted and doc_id not in seen and (stats[shard].source_complete or doc_id in refused):
            gone[shard].append(doc_id)
    for shard in shards:
        if guard is not None and not guard.allows(len(gone[shard]), live_before[shard]):
            raise MassDeleteRefused(guard.refusal(shard, gone[shard], live_before[shard]))
    for shard in shards:
        for start in range(0, len(gone[shard]), WRITE_BATCH_ROWS):
            table.update(
                where=sql_in("doc_id", gone[shard][start : start + WRITE_BATCH_ROWS]),
                values={"deleted": True, "updated_at": now},
            )
        stats[shard].deleted = len(gone[shard])
        replace_quarantine(store, "corpus", shard, quarantine[shard], now)
        stats[shard].quarantined = len(quarantine[shard])
        stats[shard].quarantine_reasons = Counter(entry.reason for entry in quarantine[shard])
    return stats
