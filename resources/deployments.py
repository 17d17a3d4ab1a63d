"""The resources of each deployment, picked as in Dagster's project_fully_featured.

`local` (the default) reads plain environment variables with laptop defaults; `prod` takes every
setting from `EnvVar`, so nothing is baked into code. The code location (`definitions.py`), the
serving API, the benchmarks and the tests all build their resources here.
"""

import os
from pathlib import Path

from dagster import EnvVar
from dagster_aws.s3 import S3Resource

from embedding_assets.core.retained import DEFAULT_RETENTION_DAYS
from embedding_assets.core.sources import EMBEDDED_CORPORA
from resources.corpus_source import CorpusSourceResource
from resources.lance_store import LanceDBResource
from resources.model_registry import ModelRegistryResource
from resources.parquet_export import ParquetExportResource
from resources.promotion_policy import PromotionPolicyResource
from resources.reembedding_budget import ReembeddingBudgetResource

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EMBEDDINGS_DATA_DIR", PROJECT_ROOT / ".data"))


def _local_path(value: str) -> str:
    """Paths given relative to where the command runs; the embedded corpora's names and URIs pass through."""
    return value if value in EMBEDDED_CORPORA or "://" in value else os.path.abspath(value)


def _flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _mass_delete_settings() -> dict:
    """The corpus's limit on deletions per run, in both deployments from plain variables with defaults
    (like RECALL_TOLERANCE): a deployment that does not set them keeps the guard, never loses it."""
    return {
        "mass_delete_max_share": float(os.environ.get("MASS_DELETE_MAX_SHARE", "0.10")),
        "mass_delete_floor": int(os.environ.get("MASS_DELETE_FLOOR", "5")),
    }


def _budget_from_env() -> ReembeddingBudgetResource:
    """MAX_REEMBED_COST (dollars), MAX_REEMBED_HOURS, GPU_HOUR_USD, GPU_CONCURRENT_RUNS; unset: no limit."""
    return ReembeddingBudgetResource(
        max_reembed_cost=float(os.environ.get("MAX_REEMBED_COST") or 0),
        max_reembed_hours=float(os.environ.get("MAX_REEMBED_HOURS") or 0),
        gpu_hour_usd=float(os.environ.get("GPU_HOUR_USD") or 0),
        gpu_concurrent_runs=int(os.environ.get("GPU_CONCURRENT_RUNS") or 0),
    )


def _diff_thresholds_from_env() -> dict:
    """DIFF_MIN_OVERLAP_AT_10 and DIFF_MAX_LOST_SHARE: unset, the version-diff report never blocks."""
    return {
        "diff_min_overlap_at_10": float(os.environ.get("DIFF_MIN_OVERLAP_AT_10") or 0),
        "diff_max_lost_share": float(os.environ.get("DIFF_MAX_LOST_SHARE") or 1),
    }


def local_resources(
    corpus_uri: str,
    embeddings_uri: str,
    cache_dir: Path,
    registry_path: Path = PROJECT_ROOT / "models.yaml",
    device: str = "auto",
) -> dict:
    """The laptop deployment's resources; tests and benchmarks build theirs with it too.

    S3 (for s3:// URIs) follows the standard AWS variables: AWS_ENDPOINT_URL, AWS_REGION,
    AWS_ALLOW_HTTP, and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY read by boto3 and LanceDB.
    """
    s3 = S3Resource(endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), region_name=os.environ.get("AWS_REGION"))
    return {
        "lancedb": LanceDBResource(
            uri=embeddings_uri,
            aws_endpoint_url=os.environ.get("AWS_ENDPOINT_URL", ""),
            aws_region=os.environ.get("AWS_REGION", ""),
            aws_allow_http=_flag("AWS_ALLOW_HTTP"),
            retained_vector_days=int(os.environ.get("RETAINED_VECTOR_DAYS", str(DEFAULT_RETENTION_DAYS))),
        ),
        "corpus_source": CorpusSourceResource(
            uri=corpus_uri, cache_dir=str(cache_dir), s3=s3, **_mass_delete_settings()
        ),
        "model_registry": ModelRegistryResource(
            registry_path=str(registry_path), model_cache_dir=str(cache_dir), device=device
        ),
        "promotion_policy": PromotionPolicyResource(
            eval_set_path=_local_path(os.environ["EVAL_SET"]) if os.environ.get("EVAL_SET") else "",
            recall_tolerance=float(os.environ.get("RECALL_TOLERANCE", "0.02")),
            keep_retired_versions=int(os.environ.get("KEEP_RETIRED_VERSIONS", "1")),
            **_diff_thresholds_from_env(),
        ),
        "export_target": ParquetExportResource(
            uri=os.environ.get("EXPORT_URI") or f"{embeddings_uri.rstrip('/').rsplit('/', 1)[0]}/exports", s3=s3
        ),
        "reembedding_budget": _budget_from_env(),
    }


def local_resources_from_env() -> dict:
    """The local deployment as the environment sets it: the pipeline and the serving API share it."""
    return local_resources(
        corpus_uri=_local_path(os.environ.get("CORPUS_URI", "stdlib")),
        embeddings_uri=_local_path(os.environ.get("EMBEDDINGS_URI", str(DATA_DIR / "lance"))),
        cache_dir=DATA_DIR / "cache",
        registry_path=Path(_local_path(os.environ.get("MODEL_REGISTRY", str(PROJECT_ROOT / "models.yaml")))),
        device=os.environ.get("EMBEDDING_DEVICE", "auto"),
    )


def prod_resources() -> dict:
    """The production deployment: every setting from `EnvVar`, read when a run starts."""
    return {
        "lancedb": LanceDBResource(
            uri=EnvVar("EMBEDDINGS_URI"),
            aws_endpoint_url=os.environ.get("AWS_ENDPOINT_URL", ""),
            aws_region=EnvVar("AWS_REGION"),
            aws_allow_http=_flag("AWS_ALLOW_HTTP"),
            retained_vector_days=EnvVar.int("RETAINED_VECTOR_DAYS"),
        ),
        "corpus_source": CorpusSourceResource(
            uri=EnvVar("CORPUS_URI"),
            cache_dir=EnvVar("EMBEDDINGS_CACHE_DIR"),
            s3=S3Resource(region_name=EnvVar("AWS_REGION")),
            **_mass_delete_settings(),
        ),
        "model_registry": ModelRegistryResource(
            registry_path=EnvVar("MODEL_REGISTRY"),
            model_cache_dir=EnvVar("EMBEDDINGS_CACHE_DIR"),
            device=EnvVar("EMBEDDING_DEVICE"),
        ),
        "promotion_policy": PromotionPolicyResource(
            # Optional: without it the set is derived from the corpus.
            eval_set_path=os.environ.get("EVAL_SET", ""),
            recall_tolerance=float(os.environ.get("RECALL_TOLERANCE", "0.02")),
            keep_retired_versions=EnvVar.int("KEEP_RETIRED_VERSIONS"),
            **_diff_thresholds_from_env(),
        ),
        "export_target": ParquetExportResource(
            uri=EnvVar("EXPORT_URI"), s3=S3Resource(region_name=EnvVar("AWS_REGION"))
        ),
        "reembedding_budget": _budget_from_env(),
    }


def resources_for_deployment(deployment: str) -> dict:
    """`local` (the default: plain environment variables with laptop defaults) or `prod` (EnvVar)."""
    builders = {"local": local_resources_from_env, "prod": prod_resources}
    if deployment not in builders:
        raise ValueError(f"DAGSTER_DEPLOYMENT={deployment!r}: expected one of {', '.join(builders)}")
    return builders[deployment]()
