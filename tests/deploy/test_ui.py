"""The Dagster UI in a real browser: what a user looks for after a build.

A small corpus is built on an instance on disk, `dagster-webserver` serves it on a free
localhost port, and Debian's chromium, driven by Playwright, checks the asset graph, the
`embeddings` partitions, the checks on `lance_index` and a materialization's metadata.
Screenshots land in test-artifacts/ui/.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from dagster import DagsterInstance
from playwright.sync_api import expect, sync_playwright

from embedding_assets.checks import index_checks
from embedding_assets.cli.pipeline_runner import run_pipeline
from embedding_assets.definitions import build_definitions
from resources.deployments import PROJECT_ROOT
from tests.builders import DEFAULT_VERSION, make_resources, write_jsonl

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "ui"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ASSETS = ["corpus", "dedup_signatures", "embeddings", "lance_index", "live_index", "parquet_export"]
GROUPS = ["dedup", "embeddings", "export", "index", "corpus"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def webserver(tmp_path, sample_records, cache_dir):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", sample_records[:40])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CORPUS_URI": str(corpus),
        "EMBEDDINGS_URI": str(tmp_path / "lance"),
        "EMBEDDINGS_DATA_DIR": str(cache_dir.parent),
    }
    instance = DagsterInstance.from_config(str(home))
    run_pipeline(
        build_definitions(make_resources(str(corpus), str(tmp_path / "lance"), cache_dir)), instance, say=lambda _: None
    )
    instance.dispose()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/server_info", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_what_a_user_looks_for_in_the_ui(webserver):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)

        page.goto(f"{webserver}/asset-groups")
        # A first visit greets the user with Dagster's community dialog.
        page.get_by_role("button", name="Skip").click()
        page.get_by_text("embeddings", exact=True).first.wait_for()
        # Expand every group, in the graph and in the sidebar tree.
        while page.locator('[aria-label="unfold_more"]').count():
            page.locator('[aria-label="unfold_more"]').first.click()
        carets = page.locator('[aria-label="arrow_drop_down"]')
        for index in range(carets.count()):
            carets.nth(index).click()
        page.keyboard.press("Escape")
        page.locator('[aria-label="zoom_out"]').click()
        for name in ASSETS:
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "asset-graph.png")

        page.goto(f"{webserver}/assets/embeddings?view=partitions")
        expect(page.get_by_text(DEFAULT_VERSION).first).to_be_visible()
        expect(page.get_by_text("Materialized (16)")).to_be_visible()
        expect(page.get_by_text("015", exact=True).first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "embeddings-partitions.png")

        page.goto(f"{webserver}/assets/lance_index?view=checks")
        for check in ("count_parity_check", "vector_sanity_check", "eval_recall_check", "ann_recall_check"):
            expect(page.get_by_text(check).first).to_be_visible()
        # Every check on lance_index ran and succeeded (passing or warning) for the live version.
        expect(page.get_by_text("Succeeded")).to_have_count(len(index_checks))
        expect(page.get_by_text("Passed").first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "lance-index-checks.png")

        page.goto(f"{webserver}/assets/embeddings?view=events")
        expect(page.get_by_text("model_calls").first).to_be_visible()
        expect(page.get_by_text("reused_exact_dup").first).to_be_visible()
        page.screenshot(path=ARTIFACTS / "embeddings-materialization.png")
        browser.close()
    assert sorted(p.name for p in ARTIFACTS.glob("*.png")) == [
        "asset-graph.png",
        "embeddings-materialization.png",
        "embeddings-partitions.png",
        "lance-index-checks.png",
    ]
