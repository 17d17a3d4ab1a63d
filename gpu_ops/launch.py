"""Run tags that send re-embedding runs to GPU capacity, for the run launcher in use, and
hosted versions' runs to a queue of their own.

`gpu=true` rides on every such run: `dagster.yaml`'s tag concurrency limit on it keeps a
large backfill from starving the small incremental runs of the live version. The rest is
what each launcher reads from run tags: `ecs/*` for dagster-aws's EcsRunLauncher,
`dagster-k8s/config` for dagster-k8s's K8sRunLauncher.
"""

import json
import os
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, Field

from gpu_ops.registry import ModelSpec

GPU_TAG = {"gpu": "true"}
# A hosted version's runs need no GPU: they queue per provider (its host), limited by `dagster.yaml`'s
# tag concurrency limit on this key (one value per provider), which stands for the provider's rate limits.
HOSTED_QUEUE_TAG = "hosted_provider"


class GpuLaunchSettings(BaseModel):
    launcher: Literal["none", "ecs", "k8s"] = "none"
    gpus: int = Field(default=1, ge=1)
    # ECS units: CPU in 1/1024 vCPU, memory in MiB (a g5.xlarge offers 4 vCPU, 16 GiB).
    ecs_cpu: str = "4096"
    ecs_memory: str = "16384"
    # An ECS capacity provider of GPU instances (its strategy replaces the cluster's default launch type).
    ecs_capacity_provider: str = ""
    k8s_cpu: str = "4"
    k8s_memory: str = "16Gi"
    k8s_node_selector: dict[str, str] = Field(default_factory=dict)
    k8s_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )

    @classmethod
    def from_env(cls) -> "GpuLaunchSettings":
        """GPU_LAUNCHER (none|ecs|k8s), GPU_COUNT, GPU_ECS_CPU, GPU_ECS_MEMORY, GPU_ECS_CAPACITY_PROVIDER,
        GPU_K8S_CPU, GPU_K8S_MEMORY, GPU_K8S_NODE_SELECTOR (JSON object)."""
        values = {
            "launcher": os.environ.get("GPU_LAUNCHER"),
            "gpus": os.environ.get("GPU_COUNT"),
            "ecs_cpu": os.environ.get("GPU_ECS_CPU"),
            "ecs_memory": os.environ.get("GPU_ECS_MEMORY"),
            "ecs_capacity_provider": os.environ.get("GPU_ECS_CAPACITY_PROVIDER"),
            "k8s_cpu": os.environ.get("GPU_K8S_CPU"),
            "k8s_memory": os.environ.get("GPU_K8S_MEMORY"),
            "k8s_node_selector": json.loads(os.environ["GPU_K8S_NODE_SELECTOR"])
            if os.environ.get("GPU_K8S_NODE_SELECTOR")
            else None,
        }
        return cls(**{key: value for key, value in values.items() if value is not None})


def gpu_run_tags(settings: GpuLaunchSettings) -> dict[str, str]:
    tags = dict(GPU_TAG)
    if settings.launcher == "ecs":
        tags.update(
            {
                "ecs/cpu": settings.ecs_cpu,
                "ecs/memory": settings.ecs_memory,
                "ecs/container_overrides": json.dumps(
                    {"resourceRequirements": [{"type": "GPU", "value": str(settings.gpus)}]}
                ),
            }
        )
        if settings.ecs_capacity_provider:
            strategy = [{"capacityProvider": settings.ecs_capacity_provider, "weight": 1}]
            tags["ecs/run_task_kwargs"] = json.dumps({"capacityProviderStrategy": strategy})
    elif settings.launcher == "k8s":
        resources = {"nvidia.com/gpu": str(settings.gpus), "cpu": settings.k8s_cpu, "memory": settings.k8s_memory}
        pod_spec = {"tolerations": settings.k8s_tolerations}
        if settings.k8s_node_selector:
            pod_spec["node_selector"] = settings.k8s_node_selector
        tags["dagster-k8s/config"] = json.dumps(
            {
                "container_config": {"resources": {"limits": resources, "requests": resources}},
                "pod_spec_config": pod_spec,
            }
        )
    return tags


def hosted_run_tags(base_url: str) -> dict[str, str]:
    """A hosted version's runs: the provider's queue, no GPU."""
    return {HOSTED_QUEUE_TAG: urlparse(base_url).netloc or base_url}


def run_tags_for(spec: ModelSpec, settings: GpuLaunchSettings) -> dict[str, str]:
    """The tags of a model version's re-embedding runs: its provider's queue if hosted, none for a CPU runtime
    (ONNX Runtime, a static model: a GPU would sit idle), else the GPU's."""
    if spec.backend == "openai":
        return hosted_run_tags(spec.base_url or "")
    return {} if spec.runs_on_cpu else gpu_run_tags(settings)
