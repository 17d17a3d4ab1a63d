"""`make register`, `make promote`, `make canary`, `make rollback`: the upgrade path from a shell.

Each acts on the same Dagster instance and registry as the UI, through the project's own jobs
(so every switch is a run with its reasons in the UI).
"""

import argparse
import json
import time

import yaml
from dagster import DagsterInstance

from embedding_assets.jobs import canary_job, live_index_job, rollback_job
from gpu_ops.registry import parse_registry


def register(registry_path: str, entry: dict) -> None:
    """Append a version to the registry file, after validating it against what is there."""
    with open(registry_path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    existing = document.get("versions") or []
    checked = parse_registry({"versions": [*existing, entry]})
    if entry["key"] not in checked.specs or any(e.startswith(f"{entry['key']}:") for e in checked.errors):
        problems = [e for e in checked.errors if e.startswith(f"{entry['key']}:")] or ["invalid entry"]
        raise SystemExit(f"not registered: {'; '.join(problems)}")
    block = yaml.safe_dump([entry], sort_keys=False, default_flow_style=False)
    with open(registry_path, "a", encoding="utf-8") as handle:
        handle.write("\n" + "".join(f"  {line}\n" for line in block.splitlines()))
    print(f"registered {entry['key']} in {registry_path}; model_registry_sensor adds its partition on its next tick")


def _execute(job, run_config: dict) -> bool:
    from embedding_assets.definitions import defs

    result = defs.resolve_job_def(job.name).execute_in_process(
        run_config=run_config, instance=DagsterInstance.get(), raise_on_error=False
    )
    metadata = {}
    if not result.success:
        failure = next((event for event in result.all_events if event.is_step_failure), None)
        print(failure.event_specific_data.error.message if failure else f"{job.name} failed")
        user_data = failure.event_specific_data.user_failure_data if failure else None
        metadata = dict(user_data.metadata) if user_data else {}
    elif job is live_index_job:
        metadata = dict(result.asset_materializations_for_node("live_index")[-1].metadata)
    _print_version_diff({key: getattr(value, "value", value) for key, value in metadata.items()})
    return result.success


def _print_version_diff(metadata: dict) -> None:
    """The version-diff report beside the promotion decision: what readers would see change."""
    if "version_diff" not in metadata:
        return
    print(f"version diff: {metadata['version_diff']}")
    print(f"  rank shift: {metadata['diff_rank_shift']}")
    for kind in ("lost", "gained"):
        for example in json.loads(metadata[f"diff_{kind}_examples"]):
            print(f"  {kind} visibility: {json.dumps(example)}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m embedding_assets.cli.manage")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("register", help="add a model version to the registry")
    add.add_argument("--registry", required=True)
    add.add_argument("--key", required=True)
    add.add_argument("--backend", default="sentence-transformers")
    add.add_argument("--model-id", required=True)
    add.add_argument("--source", required=True)
    add.add_argument("--revision", default="1")
    add.add_argument("--dim", type=int, required=True)
    add.add_argument("--max-tokens", type=int, required=True)
    add.add_argument("--normalize", choices=["true", "false"], default="true")
    add.add_argument("--dtype", default="auto")
    promote = commands.add_parser("promote", help="switch the live alias to a version, through every gate")
    promote.add_argument("model_version")
    promote.add_argument("--force", action="store_true", help="waive the retrieval-quality comparison (logged)")
    canary = commands.add_parser("canary", help="route a percent of live traffic to a version whose gates pass")
    canary.add_argument("model_version")
    canary.add_argument("percent", type=float, help="0 clears the canary, 100 makes the version live")
    rollback = commands.add_parser("rollback", help="switch the live alias back to the previous version")
    rollback.add_argument("--to", default="", help="a specific earlier version")
    args = parser.parse_args()

    if args.command == "register":
        register(
            args.registry,
            {
                "key": args.key,
                "backend": args.backend,
                "model_id": args.model_id,
                "source": args.source,
                "revision": args.revision,
                "dim": args.dim,
                "max_tokens": args.max_tokens,
                "normalize": args.normalize == "true",
                "dtype": args.dtype,
            },
        )
        return
    started = time.monotonic()
    if args.command == "promote":
        config = {"model_version": args.model_version, "force": args.force, "switched_by": "make promote"}
        ok = _execute(live_index_job, {"ops": {"live_index": {"config": config}}})
    elif args.command == "canary":
        config = {"model_version": args.model_version, "percent": args.percent}
        ok = _execute(canary_job, {"ops": {"move_canary": {"config": config}}})
    else:
        ok = _execute(rollback_job, {"ops": {"switch_live_alias_back": {"config": {"to_version": args.to}}}})
    print(f"{args.command} {'done' if ok else 'refused'} in {time.monotonic() - started:.1f}s")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
