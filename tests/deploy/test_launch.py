"""GPU run tags, read back by the run launchers' own code; a backfill run launched by the daemon as an
ECS task on moto's ECS over HTTP; the Kubernetes Job dagster-k8s builds from a run's tags."""

import json
import socket
from contextlib import contextmanager

import boto3
import pytest
import yaml
from dagster import ConfigurableResource, DagsterRun, DagsterRunStatus, EnvVar, build_resources, instance_for_test
from dagster._core.launcher import LaunchRunContext
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_k8s import K8sRunLauncher
from dagster_k8s.job import get_user_defined_k8s_config
from kubernetes.client import ApiClient
from moto.ec2.utils import generate_instance_identity_document
from moto.server import ThreadedMotoServer

from embedding_assets.core.reembedding_plan import Budget
from embedding_assets.definitions import build_definitions, defs
from gpu_ops.launch import HOSTED_QUEUE_TAG, GpuLaunchSettings, gpu_run_tags, run_tags_for
from gpu_ops.registry import ModelSpec, load_registry
from partitions import embedding_partition_key
from resources.deployments import PROJECT_ROOT, prod_resources


def _run(tags):
    return DagsterRun(job_name="embed_job", run_id="r1", tags=tags)


def test_every_gpu_run_carries_the_concurrency_tag():
    assert gpu_run_tags(GpuLaunchSettings()) == {"gpu": "true"}


def test_ecs_tags_are_what_the_ecs_run_launcher_applies():
    tags = gpu_run_tags(GpuLaunchSettings(launcher="ecs", gpus=2, ecs_cpu="8192", ecs_memory="32768"))
    run = _run(tags)
    assert EcsRunLauncher._get_container_overrides(None, run) == {
        "resourceRequirements": [{"type": "GPU", "value": "2"}]
    }
    assert EcsRunLauncher.get_cpu_and_memory_overrides(None, EcsContainerContext(), run) == {
        "cpu": "8192",
        "memory": "32768",
    }


def test_k8s_tags_validate_against_dagster_k8s_and_ask_for_gpus():
    settings = GpuLaunchSettings(launcher="k8s", k8s_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"})
    config = get_user_defined_k8s_config(gpu_run_tags(settings))
    assert config.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert config.pod_spec_config["node_selector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert config.pod_spec_config["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("GPU_LAUNCHER", "k8s")
    monkeypatch.setenv("GPU_COUNT", "4")
    monkeypatch.setenv("GPU_K8S_NODE_SELECTOR", json.dumps({"pool": "gpu"}))
    settings = GpuLaunchSettings.from_env()
    assert (settings.launcher, settings.gpus, settings.k8s_node_selector) == ("k8s", 4, {"pool": "gpu"})


def test_the_backfill_sensor_tags_its_runs_and_the_instance_limits_them():
    sensor = defs.resolve_sensor_def("embedding_backfill_sensor")
    assert sensor.run_tags["gpu"] == "true"
    instance_config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
    limits = instance_config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": "gpu", "value": "true", "limit": 1} in limits


# --- The GPU backfill launched for real -------------------------------------------------------------------------

CLUSTER = "embedding-pipeline"
TASK_FAMILY = "embedding-pipeline-run"
# What the prod deployment's daemon and runs are given (deploy/ecs/dagster.yaml `env_vars`).
PROD_ENVIRONMENT = {
    "DAGSTER_PG_URL": "postgresql://dagster@db:5432/dagster",
    "DAGSTER_DEPLOYMENT": "prod",
    "EMBEDDINGS_URI": "s3://embeddings/lance",
    "CORPUS_URI": "s3://embeddings/corpus/",
    "AWS_REGION": "us-east-1",
    "MODEL_REGISTRY": str(PROJECT_ROOT / "models.yaml"),
    "EMBEDDINGS_CACHE_DIR": "/var/cache/embeddings",
    "EMBEDDING_DEVICE": "cuda",
    "EVAL_SET": "",
    "KEEP_RETIRED_VERSIONS": "1",
    "RETAINED_VECTOR_DAYS": "30",
    "EXPORT_URI": "s3://embeddings/exports",
    "MAX_REEMBED_COST": "50",
    "MAX_REEMBED_HOURS": "6",
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _deploy_config(name: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "deploy" / name / "dagster.yaml").read_text())


@pytest.fixture
def prod_environment(monkeypatch):
    for name, value in PROD_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def ecs(monkeypatch, prod_environment):
    """moto's ECS over HTTP on 127.0.0.1: the cluster, the run task definition and one GPU instance."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DAGSTER_ECS_TASK_DEFINITION": TASK_FAMILY,
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("ecs")
    client.create_cluster(clusterName=CLUSTER)
    client.register_task_definition(
        family=TASK_FAMILY,
        requiresCompatibilities=["EC2"],
        containerDefinitions=[{"name": "run", "image": "embedding-pipeline:latest", "cpu": 256, "memory": 512}],
    )
    [instance] = boto3.resource("ec2").create_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)
    document = json.dumps(generate_instance_identity_document(instance))
    client.register_container_instance(cluster=CLUSTER, instanceIdentityDocument=document)
    yield client
    server.stop()


@contextmanager
def _daemon_workspace(instance):
    """The project's code location loaded in-process, as the daemon's workspace."""
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="embedding_assets.definitions", working_directory=str(PROJECT_ROOT))
    )
    with WorkspaceProcessContext(instance, InProcessTestWorkspaceLoadTarget(origin)) as process_context:
        yield process_context


def _submit_backfill_run(instance, process_context, tags: dict) -> str:
    """A run of one shard of the backfill, as the backfill daemon submits it: queued with the sensor's tags."""
    workspace = process_context.create_request_context()
    [entry] = workspace.get_code_location_entries().values()
    assert entry.code_location, entry.load_error
    [repository] = entry.code_location.get_repositories().values()
    remote_job = repository.get_full_job("embed_job")
    key = embedding_partition_key("mpnet-base-v1", "003")
    run = instance.create_run_for_job(
        job_def=defs.resolve_job_def("embed_job"),
        tags={**tags, "dagster/partition": str(key), "dagster/backfill": "upgrade"},
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
    )
    instance.submit_run(run.run_id, workspace)
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.QUEUED
    # One iteration of the daemon's run queue: it dequeues the run and hands it to the instance's launcher.
    list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(process_context))
    return run.run_id


def test_the_daemon_launches_a_gpu_backfill_run_as_an_ecs_task(ecs, monkeypatch):
    monkeypatch.setenv("GPU_LAUNCHER", "ecs")
    config = _deploy_config("ecs")
    settings = GpuLaunchSettings.from_env()
    tags = gpu_run_tags(settings)
    with instance_for_test(overrides={key: config[key] for key in ("run_coordinator", "run_launcher")}) as instance:
        assert isinstance(instance.run_launcher, EcsRunLauncher)
        with _daemon_workspace(instance) as process_context:
            run_id = _submit_backfill_run(instance, process_context, tags)
        run = instance.get_run_by_id(run_id)
        assert run.status == DagsterRunStatus.STARTING
        [task] = ecs.describe_tasks(cluster=CLUSTER, tasks=[run.tags["ecs/task_arn"]])["tasks"]
    overrides = task["overrides"]
    [container] = overrides["containerOverrides"]
    assert container["name"] == "run"
    assert container["resourceRequirements"] == [{"type": "GPU", "value": "1"}]
    assert (overrides["cpu"], overrides["memory"]) == ("4096", "16384")
    assert container["command"][:3] == ["dagster", "api", "execute_run"]
    args = json.loads(container["command"][3])
    assert args["__class__"] == "ExecuteRunArgs" and run_id in container["command"][3], sorted(args)
    assert task["taskDefinitionArn"].split("/")[-1].startswith(f"{TASK_FAMILY}:")
    assert task["clusterArn"].endswith(f"cluster/{CLUSTER}")


def test_the_prod_deployment_needs_no_variable_the_ecs_runs_are_not_given(prod_environment):
    """Every EnvVar of the prod resources is in deploy/ecs/dagster.yaml's env_vars, and they load from them."""
    given = set(_deploy_config("ecs")["run_launcher"]["config"]["env_vars"])
    resources = prod_resources()
    assert _env_vars_named(resources.values()) <= given
    assert set(PROD_ENVIRONMENT) == given
    with build_resources(resources) as built:
        assert built.lancedb.uri == "s3://embeddings/lance" and built.lancedb.retained_vector_days == 30
        assert built.model_registry.device == "cuda" and "minilm-l6-v1" in built.model_registry.registry().specs
        assert built.promotion_policy.keep_retired_versions == 1 and built.promotion_policy.eval_set_path == ""
        assert built.export_target.uri == "s3://embeddings/exports"
        assert built.reembedding_budget.budget() == Budget(max_cost_usd=50.0, max_hours=6.0)
    build_definitions(resources).resolve_asset_graph()


def _env_vars_named(values) -> set[str]:
    """Names of the EnvVars in resources' settings, nested resources included."""
    names = set()
    for value in values:
        if isinstance(value, EnvVar):
            names.add(str(value.env_var_name))
        elif isinstance(value, ConfigurableResource):
            names |= _env_vars_named(value.__dict__.values())
    return names


class _CapturingBatchApi:
    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append((body, namespace))


def test_the_k8s_job_built_from_a_backfill_run_asks_for_gpus_and_validates_as_kubernetes_models(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_LAUNCHER", "k8s")
    monkeypatch.setenv("GPU_COUNT", "2")
    monkeypatch.setenv("GPU_K8S_NODE_SELECTOR", json.dumps({"cloud.google.com/gke-accelerator": "nvidia-l4"}))
    config = _deploy_config("k8s")["run_launcher"]["config"]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    batch_api = _CapturingBatchApi()
    launcher = K8sRunLauncher(
        service_account_name=config["service_account_name"],
        instance_config_map=config["instance_config_map"],
        dagster_home=config["dagster_home"],
        job_image="embedding-pipeline:latest",
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
        job_namespace="embeddings",
        env_config_maps=config["env_config_maps"],
        env_secrets=config["env_secrets"],
        k8s_client_batch_api=batch_api,
        k8s_client_core_api=object(),
    )
    with instance_for_test() as instance:
        launcher.register_instance(instance)
        with _daemon_workspace(instance) as process_context:
            workspace = process_context.create_request_context()
            [entry] = workspace.get_code_location_entries().values()
            [repository] = entry.code_location.get_repositories().values()
            remote_job = repository.get_full_job("embed_job")
            run = instance.create_run_for_job(
                job_def=defs.resolve_job_def("embed_job"),
                tags=gpu_run_tags(GpuLaunchSettings.from_env()),
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
            )
            launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=workspace))
    [(job, namespace)] = batch_api.jobs
    assert namespace == "embeddings"
    # Serialized as the API server receives it, then read back through the Kubernetes API models.
    manifest = ApiClient().sanitize_for_serialization(job)
    response = type("Response", (), {"data": json.dumps(manifest)})()
    parsed = ApiClient().deserialize(response, "V1Job")
    pod = parsed.spec.template.spec
    [container] = pod.containers
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert container.resources.requests["nvidia.com/gpu"] == "2"
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert run.run_id in " ".join(container.args)
    assert manifest["kind"] == "Job" and manifest["metadata"]["labels"]["dagster/run-id"] == run.run_id


def test_hosted_versions_queue_per_provider_and_never_ask_for_a_gpu():
    hosted = ModelSpec(
        key="openai-3-small-v1",
        backend="openai",
        model_id="text-embedding-3-small",
        base_url="https://api.openai.com/v1",
        dim=1536,
        max_tokens=8191,
    )
    settings = GpuLaunchSettings(launcher="ecs")
    assert run_tags_for(hosted, settings) == {HOSTED_QUEUE_TAG: "api.openai.com"}
    local = load_registry(PROJECT_ROOT / "models.yaml").spec("minilm-l6-v1")
    assert run_tags_for(local, settings)["gpu"] == "true"
    on_cpu = load_registry(PROJECT_ROOT / "models-cpu.yaml").spec("minilm-l6-int8-v1")
    assert on_cpu.runs_on_cpu and run_tags_for(on_cpu, settings) == {}
    for name in ("", "ecs", "k8s"):
        path = PROJECT_ROOT / "deploy" / name / "dagster.yaml" if name else PROJECT_ROOT / "dagster.yaml"
        limits = yaml.safe_load(path.read_text())["run_coordinator"]["config"]["tag_concurrency_limits"]
        assert {"key": HOSTED_QUEUE_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 4} in limits
