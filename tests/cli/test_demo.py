"""`make demo` and `make search`, run as the user runs them, on a small CORPUS_URI."""

import os
import re
import shutil
import subprocess
import sys

from resources.deployments import PROJECT_ROOT
from tests.builders import write_jsonl


def _run(module: str, env: dict, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _figure(output: str, label: str) -> int:
    return int(re.search(rf"{label}\s+([\d,]+)", output).group(1).replace(",", ""))


def test_demo_builds_everything_then_makes_zero_model_calls(tmp_path, sample_records):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CORPUS_URI": str(write_jsonl(tmp_path / "corpus.jsonl", sample_records[:120])),
        "EMBEDDINGS_URI": str(tmp_path / "lance"),
        "EMBEDDINGS_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
    }
    first = _run("embedding_assets.cli.demo", env)
    assert _figure(first, "documents") == 120
    assert _figure(first, "model calls") > 0
    assert _figure(first, "vectors written") >= 120
    assert "check count_parity_check           PASS" in first
    assert "live index           minilm-l6-v1" in first
    assert re.search(r"Top 5 for .* on live \(minilm-l6-v1\):\n  1\. 0\.\d{3}", first)
    assert "make ui" in first

    second = _run("embedding_assets.cli.demo", env)
    assert _figure(second, "model calls") == 0
    assert "(everything was already embedded)" in second
    assert _figure(second, "vectors written") == 0

    title = sample_records[5]["title"]
    found = _run("embedding_assets.cli.search", env, sample_records[5]["text"][:200])
    assert "live = minilm-l6-v1" in found and title in found.splitlines()[1]


def test_demo_documents_its_mass_delete_override():
    help_text = _run("embedding_assets.cli.demo", dict(os.environ), "--help")
    assert "--allow-mass-delete" in help_text and "ALLOW_MASS_DELETE=1" in help_text
