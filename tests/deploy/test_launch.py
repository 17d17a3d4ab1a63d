"""GPU run tags, read back by the run launchers' own code."""

import json

import yaml
from dagster import DagsterRun
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.ecs.container_context import EcsContainerContext
from dagster_k8s.job import get_user_defined_k8s_config

from embedding_assets.definitions import defs
from gpu_ops.launch import GpuLaunchSettings, gpu_run_tags
from resources.deployments import PROJECT_ROOT


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
