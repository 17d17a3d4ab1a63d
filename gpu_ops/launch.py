"""Run tags that send re-embedding runs to GPU capacity, for the run launcher in use.

`gpu=true` rides on every such run: `dagster.yaml`'s tag concurrency limit on it keeps a
large backfill from starving the small incremental runs of the live version. The rest is
what each launcher reads from run tags: `ecs/*` for dagster-aws's EcsRunLauncher,
`dagster-k8s/config` for dagster-k8s's K8sRunLauncher.
"""

import json
import os
from typing import Literal

from pydantic import BaseModel, Field

GPU_TAG = {"gpu": "true"}


class GpuLaunchSettings(BaseModel):
    launcher: Literal["none", "ecs", "k8s"] = "none"
    gpus: int = Field(default=1, ge=1)
    # ECS units: CPU in 1/1024 vCPU, memory in MiB (a g5.xlarge offers 4 vCPU, 16 GiB).
    ecs_cpu: str = "4096"
    ecs_memory: str = "16384"
    k8s_cpu: str = "4"
    k8s_memory: str = "16Gi"
    k8s_node_selector: dict[str, str] = Field(default_factory=dict)
    k8s_tolerations: list[dict[str, str]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )

    @classmethod
    def from_env(cls) -> "GpuLaunchSettings":
        """GPU_LAUNCHER (none|ecs|k8s), GPU_COUNT, GPU_ECS_CPU, GPU_ECS_MEMORY, GPU_K8S_CPU, GPU_K8S_MEMORY,
        GPU_K8S_NODE_SELECTOR (JSON object)."""
        values = {
            "launcher": os.environ.get("GPU_LAUNCHER"),
            "gpus": os.environ.get("GPU_COUNT"),
            "ecs_cpu": os.environ.get("GPU_ECS_CPU"),
            "ecs_memory": os.environ.get("GPU_ECS_MEMORY"),
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
