"""Images and pairs through the whole graph: scikit-image's photographs, the small random CLIP, bad files."""

import base64
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import boto3
import numpy as np
import pytest
import skimage.data
from dagster import instance_for_test
from moto import mock_aws
from PIL import Image

from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.cli.search import search_live, search_version
from embedding_assets.core.corpus_sync import classify, document_content_hash, sync_corpus_shard
from embedding_assets.core.dedup import dedup_shard
from embedding_assets.core.embedding_run import embed_shard
from embedding_assets.core.gates import check_table_version
from embedding_assets.core.images import MAX_IMAGE_BYTES, find_image_problem, open_image
from embedding_assets.core.index_checks import count_parity
from embedding_assets.core.minhash import MinHasher
from embedding_assets.core.sources import SourceDocument, iter_source
from embedding_assets.core.sources.skimage_corpus import skimage_rows
from embedding_assets.core.store import LanceStore, fixed_size_lists, scan
from embedding_assets.core.vector_search import nearest_documents, search
from embedding_assets.definitions import build_definitions
from partitions import shard_partitions
from tests.builders import CLIP_VERSION, make_resources

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CHELSEA = "skimage:chelsea.png"


def _png(size=(40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _sideways_jpeg() -> bytes:
    """A wide photo whose EXIF says the camera was turned: viewers show it tall."""
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :40] = (250, 250, 250)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", exif=exif, quality=95)
    return buffer.getvalue()


def bad_images() -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, the reason intake gives)."""
    png = Path(skimage.data.data_dir, "coffee.png").read_bytes()
    corrupt = png[:2000] + bytes(b ^ 0xFF for b in png[2000:6000]) + png[6000:]
    bomb = io.BytesIO()
    Image.new("1", (12_000, 8_000)).save(bomb, "PNG")  # 12 KB that would decode to 96 million pixels
    return {
        "notes.png": (b"shopping list: milk, eggs\n", "unsupported_image_format"),
        "empty.png": (b"", "empty_image"),
        "huge.png": (png[:64] + bytes(MAX_IMAGE_BYTES), "image_too_large"),
        "bomb.png": (bomb.getvalue(), "image_too_large"),
        "truncated.png": (png[: len(png) // 2], "truncated_image"),
        "corrupt.png": (corrupt, "corrupt_image"),
    }


def test_each_kind_of_bad_image_is_refused_with_its_reason():
    for name, (data, reason) in bad_images().items():
        assert find_image_problem(data).reason == reason, name
    assert find_image_problem(_png()) is None


def test_exif_orientation_is_applied_and_images_become_rgb():
    upright = open_image(_sideways_jpeg())
    assert upright.size == (40, 80) and upright.mode == "RGB"
    # Turned clockwise, the white left half of the stored pixels is now on top.
    assert np.asarray(upright)[:40].mean() > 200 and np.asarray(upright)[40:].mean() < 50
    buffer = io.BytesIO()
    Image.new("LA", (8, 8)).save(buffer, "PNG")
    assert open_image(buffer.getvalue()).mode == "RGB"


def test_the_embedded_image_corpus_is_scikit_images_photographs_with_their_captions(cache_dir):
    records = list(iter_source("skimage", cache_dir))
    assert len(records) == 29 and all(isinstance(r, SourceDocument) for r in records)
    by_id = {r.doc_id: r for r in records}
    assert by_id[CHELSEA].text == "Chelsea the cat." and by_id[CHELSEA].title == "chelsea"
    assert by_id[CHELSEA].image == Path(skimage.data.data_dir, "chelsea.png").read_bytes()
    modalities = [item.modality for item in classify(records) if not item.refusal]
    assert modalities.count("pair") == 25 and modalities.count("image") == 3
    refused = [(item.record.doc_id, item.refusal.reason) for item in classify(records) if item.refusal]
    # A float64 TIFF, which Pillow cannot decode: real bad input in a real corpus.
    assert refused == [("skimage:multipage_rgb.tif", "unsupported_image_format")]
    assert len(list(iter_source("skimage", cache_dir, "003"))) < 29


def test_images_on_s3_by_key_and_by_path_from_a_jsonl_object(monkeypatch, tmp_path):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(name, value)
    chelsea = Path(skimage.data.data_dir, "chelsea.png").read_bytes()
    lines = [
        {"id": "pair", "image": "chelsea.png", "caption": "Chelsea the cat."},
        {"id": "absolute", "image": "s3://photos/shelf/chelsea.png"},
        {"id": "missing", "image": "nowhere.png"},
    ]
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="photos")
        client.put_object(Bucket="photos", Key="shelf/chelsea.png", Body=chelsea)
        client.put_object(Bucket="photos", Key="shelf/empty.jpg", Body=b"")
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        client.put_object(Bucket="photos", Key="shelf/captions.jsonl", Body=body)
        records = {record.doc_id: record for record in iter_source("s3://photos/shelf/", tmp_path, None, client)}
    assert records["chelsea.png"].image == chelsea and records["chelsea.png"].title == "chelsea"
    assert (records["pair"].image, records["pair"].text) == (chelsea, "Chelsea the cat.")
    assert records["absolute"].image == chelsea
    assert (records["missing"].reason, records["empty.jpg"].reason) == ("missing_image", "empty_image")


def write_image_corpus(root: Path) -> Path:
    """scikit-image's rows as files and a JSONL of paths and captions, plus duplicates, a sideways photo,
    a text, bad files and a missing one."""
    images = root / "images"
    images.mkdir()
    lines = []
    for row in skimage_rows().to_pylist():
        name = row["id"].removeprefix("skimage:")
        (images / name).write_bytes(row["image"])
        lines.append({"id": row["id"], "title": row["title"], "image": f"images/{name}", "caption": row["caption"]})
    chessboard = (images / "chessboard_RGB.png").read_bytes()
    (images / "sideways.jpg").write_bytes(_sideways_jpeg())
    lines += [
        {"id": "copy:coffee", "image": "images/coffee.png", "caption": "Coffee cup."},
        {"id": "copy:chessboard", "image_base64": base64.b64encode(chessboard).decode()},
        {"id": "sideways", "image": "images/sideways.jpg"},
        {"id": "note:cats", "text": "Cats sleep for most of the day and hunt at dusk."},
        {"id": "missing", "image": "images/nowhere.png", "caption": "An image that is not there."},
    ]
    for name, (data, _) in bad_images().items():
        (images / name).write_bytes(data)
        lines.append({"id": f"bad:{name}", "image": f"images/{name}", "caption": "should never be embedded"})
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return corpus


def clip_only_registry(path: Path, clip_spec) -> Path:
    path.write_text(json.dumps({"versions": [clip_spec.model_dump()]}), encoding="utf-8")
    return path


@dataclass
class ImageGraph:
    root: Path
    store: LanceStore
    defs: object
    first: object
    second: object


@pytest.fixture(scope="module")
def graph(tmp_path_factory, cache_dir, clip_spec):
    root = tmp_path_factory.mktemp("images")
    corpus = write_image_corpus(root)
    registry = clip_only_registry(root / "models.yaml", clip_spec)
    defs = build_definitions(make_resources(str(corpus), str(root / "lance"), cache_dir, registry))
    with instance_for_test() as instance:
        first = run_pipeline(defs, instance, say=lambda _: None)
        second = run_pipeline(defs, instance, say=lambda _: None)
        yield ImageGraph(root, LanceStore(str(root / "lance")), defs, first, second)


def _rows(graph) -> dict[str, dict]:
    return {row["id"]: row for row in scan(graph.store.open_embeddings_table(CLIP_VERSION), None).to_pylist()}


def test_images_pairs_and_texts_are_embedded_and_every_check_passes(graph):
    report = graph.first
    assert report.totals["documents"] == 32  # 28 of scikit-image's 29, two copies, the sideways photo, a text
    checks = {check.name: check for check in report.checks}
    assert all(check.passed for name, check in checks.items() if name != "quarantine_check"), report.checks
    assert checks["quarantine_check"].verdict == "WARN" and "8 input(s)" in checks["quarantine_check"].description
    # Every check of the table passes, but a model with random weights is never served.
    assert report.live_version is None and "random weights" in report.live_error
    counts = report.per_version[CLIP_VERSION]
    # One call per distinct content: 25 pairs, 4 images, 1 text (the copies reuse their twins' vectors).
    assert counts["model_calls"] == 30 and counts["skipped_modality"] == 0
    # A pair has two rows (its image, then its caption), an image or a short text one.
    assert counts["rows"] == len(_rows(graph)) == 26 * 2 + 5 + 1


def test_a_rerun_makes_zero_model_calls(graph):
    counts = graph.second.per_version[CLIP_VERSION]
    assert counts["model_calls"] == 0 and counts["vectors_written"] == 0
    assert all(check.passed for check in graph.second.checks if check.name != "quarantine_check")


def test_every_bad_image_is_quarantined_with_its_reason_and_nothing_else_is(graph):
    held = {(row["doc_id"], row["reason"]) for row in scan(graph.store.table("quarantine"), None).to_pylist()}
    expected = {(f"bad:{name}", reason) for name, (_, reason) in bad_images().items()}
    expected |= {("missing", "missing_image"), ("skimage:multipage_rgb.tif", "unsupported_image_format")}
    assert held == expected
    assert not {doc_id for doc_id, _ in held} & {row["doc_id"] for row in _rows(graph).values()}


def test_provenance_content_hashes_and_exact_duplicate_images(graph):
    rows = _rows(graph)
    sources = {row["id"]: row for row in skimage_rows().to_pylist()}
    chelsea = sources[CHELSEA]
    for row_id in (f"{CHELSEA}#0", f"{CHELSEA}#1"):
        row = rows[row_id]
        assert row["content_hash"] == document_content_hash("Chelsea the cat.", chelsea["image"])
        assert (row["model_version"], row["model_id"], row["dim"], row["origin"]) == (
            CLIP_VERSION,
            "tiny-clip",
            64,
            "computed",
        )
    assert rows["skimage:chessboard_RGB.png"]["content_hash"] == document_content_hash(
        "", sources["skimage:chessboard_RGB.png"]["image"]
    )

    for copy, twin in (("copy:chessboard", "skimage:chessboard_RGB.png"), ("copy:coffee#0", "skimage:coffee.png#0")):
        # The smallest doc_id holding the bytes is their `self`; the other reuses its vector as an exact duplicate.
        assert "exact_dup" in {rows[copy]["origin"], rows[twin]["origin"]}
        assert rows[copy]["origin_hash"] == rows[twin]["origin_hash"] == rows[twin]["content_hash"]
        assert np.array_equal(rows[copy]["vector"], rows[twin]["vector"])
    signatures = {row["doc_id"]: row for row in scan(graph.store.table("signatures"), None).to_pylist()}
    # Near duplicates are a notion of text: images and pairs carry no MinHash.
    assert signatures[CHELSEA]["minhash"] is None and signatures["note:cats"]["minhash"] is not None


def test_image_vectors_are_the_upright_photo_through_clips_image_tower(graph, clip_encoder):
    rows = _rows(graph)
    stored = rows["sideways"]["vector"]
    upright = open_image(_sideways_jpeg())
    assert np.allclose(stored, clip_encoder.encode_images([upright]).vectors[0], atol=1e-5)
    as_stored = Image.open(io.BytesIO(_sideways_jpeg())).convert("RGB")
    assert not np.allclose(stored, clip_encoder.encode_images([as_stored]).vectors[0], atol=1e-3)
    chelsea = Path(skimage.data.data_dir, "chelsea.png").read_bytes()
    assert np.allclose(
        rows[f"{CHELSEA}#0"]["vector"], clip_encoder.encode_images([open_image(chelsea)]).vectors[0], atol=1e-5
    )


def test_a_caption_finds_its_pair_through_the_text_tower_and_the_image_finds_it_too(graph, clip_encoder):
    caption = "Chelsea the cat."
    rows = _rows(graph)
    query = clip_encoder.encode_texts([caption]).vectors[0]
    # The stored caption row is the text tower's vector of the caption: the search vector, exactly.
    assert np.allclose(rows[f"{CHELSEA}#1"]["vector"], query, atol=1e-6)
    latest = graph.store.open_embeddings_table(CLIP_VERSION).version
    hits = search(graph.store, CLIP_VERSION, latest, clip_encoder, caption)
    assert (hits[0].doc_id, hits[0].row_id, hits[0].modality) == (CHELSEA, f"{CHELSEA}#1", "pair")
    assert hits[0].score == pytest.approx(1.0, abs=1e-5) and hits[0].snippet == caption
    assert [hit.doc_id for hit in search_version(graph.defs, CLIP_VERSION, caption, table_version=latest)][:1] == [
        CHELSEA
    ]
    # Readers see only versions that passed their gates: this one has random weights.
    with pytest.raises(SystemExit, match="no table version that passed its gates"):
        search_version(graph.defs, CLIP_VERSION, caption)
    with pytest.raises(SystemExit, match="nothing is live"):
        search_live(graph.defs, caption)
    image_vector = fixed_size_lists(
        scan(graph.store.open_embeddings_table(CLIP_VERSION), f"id = '{CHELSEA}#0'").column("vector")
    )[0]
    by_image = nearest_documents(graph.store.open_embeddings_table(CLIP_VERSION), image_vector, 3)
    assert (by_image[0]["doc_id"], by_image[0]["chunk"]) == (CHELSEA, 0)
    texts = search(graph.store, CLIP_VERSION, latest, clip_encoder, "Cats sleep for most of the day and hunt at dusk.")
    assert (texts[0].doc_id, texts[0].modality) == ("note:cats", "text")


def test_a_text_model_beside_clip_skips_images_alone_and_says_how_many(
    tmp_path, cache_dir, minilm_spec, minilm_encoder, clip_spec, clip_encoder
):
    store = LanceStore(str(tmp_path / "lance"))
    records = [
        {"id": "pair:cat", "image": "images/chelsea.png", "caption": "Chelsea the cat."},
        {"id": "pair:coffee", "image": "images/coffee.png", "caption": "Coffee cup."},
        {"id": "image:moon", "image": "images/moon.png"},
        {"id": "image:horse", "image": "images/horse.png"},
        {"id": "text:note", "text": "A cup of coffee on a saucer, seen from above."},
    ]
    (tmp_path / "images").mkdir()
    for name in ("chelsea.png", "coffee.png", "moon.png", "horse.png"):
        (tmp_path / "images" / name).write_bytes(Path(skimage.data.data_dir, name).read_bytes())
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    shards = shard_partitions.get_partition_keys()
    for shard in shards:
        sync_corpus_shard(store, iter_source(str(corpus), tmp_path, shard), shard, NOW)
    for shard in shards:
        dedup_shard(store, shard, MinHasher())
    text_stats = [embed_shard(store, minilm_spec, lambda: minilm_encoder, shard, lambda: NOW) for shard in shards]
    clip_stats = [embed_shard(store, clip_spec, lambda: clip_encoder, shard, lambda: NOW) for shard in shards]

    assert sum(s.skipped_modality for s in text_stats) == 2 and sum(s.skipped_modality for s in clip_stats) == 0
    text_rows = scan(store.open_embeddings_table(minilm_spec.key), None, ["id", "doc_id"])
    # The text model reads the pairs' captions and the text; it holds no row for an image alone.
    assert sorted(text_rows.column("id").to_pylist()) == ["pair:cat", "pair:coffee", "text:note"]
    assert sum(s.images_encoded for s in clip_stats) == 4 and sum(s.model_calls for s in clip_stats) == 5
    parity = count_parity(store, minilm_spec, minilm_encoder.token_spans)
    assert parity.passed and parity.metadata["skipped_modality"] == 2 and parity.metadata["expected_rows"] == 3
    assert "2 images without text skipped" in parity.description
    clip_parity = count_parity(store, clip_spec, clip_encoder.token_spans)
    assert clip_parity.passed and clip_parity.metadata["expected_rows"] == 2 * 2 + 2 + 1


def test_a_text_model_on_photographs_alone_has_nothing_to_serve_and_fails_its_gates(
    tmp_path, cache_dir, minilm_spec, minilm_encoder
):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png", "moon.png"):
        (folder / name).write_bytes(Path(skimage.data.data_dir, name).read_bytes())
    store = LanceStore(str(tmp_path / "lance"))
    shards = shard_partitions.get_partition_keys()
    for shard in shards:
        sync_corpus_shard(store, iter_source(str(folder), tmp_path, shard), shard, NOW)
        dedup_shard(store, shard, MinHasher())
    stats = [embed_shard(store, minilm_spec, lambda: minilm_encoder, shard, lambda: NOW) for shard in shards]
    assert sum(s.skipped_modality for s in stats) == 3 and sum(s.model_calls for s in stats) == 0
    verdict = check_table_version(
        store, minilm_spec, minilm_encoder.token_spans, store.open_embeddings_table(minilm_spec.key).version
    )
    assert not verdict.passed
    assert "0 vectors for 3 live documents" in verdict.outcomes["vector_sanity"].description
    assert "no vectors for a corpus of 3 live documents" in verdict.outcomes["count_parity"].description
