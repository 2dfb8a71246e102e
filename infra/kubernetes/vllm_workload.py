"""The vLLM workload of one model revision, as plain manifests (no Pulumi): a Deployment, or a LeaderWorkerSet
when the plan spans several nodes per replica, its Service on port 8000, and a PodDisruptionBudget.

Why it looks the way it does:
- GPUs, CPU and memory per pod come from the plan and the instance shape, so the pod fits the node
  Karpenter launches for it and nothing else lands there;
- the model comes from the S3 cache (the revision's cache patch: init containers, volumes, `--model`), so
  the Hub is never contacted (`HF_HUB_OFFLINE=1`) and the HF token is never mounted;
- the API key reaches vLLM only as `VLLM_API_KEY` from its Secret;
- a startup probe sized from the plan's cold start keeps liveness off while the model loads;
- rollouts surge one replica and never take one away first (`maxUnavailable: 0`), the PDB keeps
  `replicas.min` serving through voluntary disruptions, and a preStop pause plus vLLM's own drain
  (`--shutdown-timeout`) let in-flight requests finish;
- with two or more replicas at minimum, replicas go to different nodes (and preferably zones);
- non-root, no capabilities, RuntimeDefault seccomp, a read-only root filesystem: writable volumes only for
  /tmp, the home directory's caches (Triton, FlashInfer), /dev/shm and the caches the patch mounts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.kubernetes.model_cache import (
    IMAGE_UID,
    TMP_VOLUME,
    Manifest,
    SecretKeyRef,
    ServingPodPatch,
    container_security_context,
)
from infra.kubernetes.nodepools import GPU_RESOURCE
from infra.kubernetes.serving_cache import FILL_BYTES_PER_SECOND, FILL_STARTUP_SECONDS
from infra.sizing.plan import ServingPlan
from infra.sizing.vllm_constants import POD_MEMORY_FRACTION
from infra.vllm import probes as vllm_probes
from infra.vllm.args import (
    MULTI_NODE_PORT,
    SERVE_PORT,
    SHUTDOWN_TIMEOUT_S,
    api_key_env,
    node_args,
    serve_args,
)

APP = "vllm"
REVISION_LABEL = "llm-serving/revision"
ROLE_LABEL = "llm-serving/role"  # leader or worker of a multi-node replica; server otherwise
PORT_NAME = "http"
HOME = "/home/vllm"  # images/serving's user home: Triton, FlashInfer and vLLM's default caches go under it
LWS_API = "leaderworkerset.x-k8s.io/v1"
TIMEOUT_ANNOTATION = "pulumi.com/timeoutSeconds"

# The pod's share of a node it shares with the kubelet, the system daemons (device plugin, CNI, Pod
# Identity agent, GPU exporter) and eviction thresholds; vLLM needs host memory for pinned buffers and
# CPU for tokenization, detokenization and the API server.
NODE_CPU_FRACTION = 0.85
NODE_MEMORY_FRACTION = POD_MEMORY_FRACTION  # the planner bounds CPU offload by the same share
# /dev/shm: NCCL and vLLM's multiprocess executor exchange tensors through it, so it grows with the GPUs
# a pod drives. Memory-backed, so it counts against the pod's memory.
SHM_BASE_GIB = 2
SHM_PER_EXTRA_GPU_GIB = 2
SHM_MAX_GIB = 16
TMP_GIB = 4
HOME_CACHE_GIB = 10
# The load balancer stops sending new requests a little after a pod starts terminating; this pause covers
# that before vLLM is told to stop (it then drains for SHUTDOWN_TIMEOUT_S).
PRESTOP_PAUSE_S = 20
TERMINATION_GRACE_S = PRESTOP_PAUSE_S + SHUTDOWN_TIMEOUT_S + 15
SURGE = 1  # extra replicas a rollout may start; the GPU pool's limits include them
# What `pulumi up` waits for a rollout beyond the startup probe: a node to launch and the image to be
# pulled onto it (vLLM's is ~10 GB).
NODE_LAUNCH_S = 5 * 60
IMAGE_PULL_S = 10 * 60


@dataclass(frozen=True)
class InstanceShape:
    """What one node of the plan's instance type offers."""

    vcpus: int
    memory_gib: float
    gpus: int


@dataclass(frozen=True)
class WorkloadSpec:
    """Everything one revision's workload is built from."""

    name: str  # Deployment/LeaderWorkerSet and Service name, e.g. vllm-primary
    namespace: str
    revision: str  # the revision's name in the stack config
    image: str
    plan: ServingPlan
    instance: InstanceShape
    cache_patch: ServingPodPatch
    checkpoint_bytes: int  # what the init container pulls (for the rollout timeout)
    served_name: str
    api_key_secret: SecretKeyRef
    replicas: int  # replicas to run (the autoscaler, when there is one, changes it)
    min_available: int  # the serving minimum (replicas.min): the PDB and the spread follow it
    extra_args: tuple[str, ...] = ()
    extra_args_key: str = "extraArgs"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.plan.gpus_per_replica % self.plan.nodes_per_replica:
            raise ValueError("a multi-node plan must give every node the same number of GPUs")
        if self.replicas < 0 or self.min_available < 0:
            raise ValueError("replicas and min_available must not be negative")

    @property
    def multi_node(self) -> bool:
        return self.plan.nodes_per_replica > 1

    @property
    def spread(self) -> bool:
        """Replicas on separate nodes: losing one node must not take the model down."""
        return self.min_available >= 2


def workload_name(revision: str) -> str:
    """The revision's Deployment (or LeaderWorkerSet) and Service name."""
    return f"{APP}-{revision}"


def gpus_per_pod(plan: ServingPlan) -> int:
    return plan.gpus_per_replica // plan.nodes_per_replica


def shm_gib(plan: ServingPlan) -> int:
    return min(SHM_MAX_GIB, SHM_BASE_GIB + SHM_PER_EXTRA_GPU_GIB * (gpus_per_pod(plan) - 1))


def pod_resources(plan: ServingPlan, instance: InstanceShape, ephemeral_gib: int) -> Manifest:
    """Requests for the pod's share of its node (by GPUs); memory and GPUs limited to the request, CPU not
    (throttling would slow tokenization under load for nothing)."""
    share = gpus_per_pod(plan) / instance.gpus
    cpu = max(1, math.floor(instance.vcpus * share * NODE_CPU_FRACTION))
    memory = max(4, math.floor(instance.memory_gib * share * NODE_MEMORY_FRACTION))
    gpus = str(gpus_per_pod(plan))
    return {
        "requests": {
            "cpu": str(cpu),
            "memory": f"{memory}Gi",
            "ephemeral-storage": f"{ephemeral_gib}Gi",
            GPU_RESOURCE: gpus,
        },
        "limits": {"memory": f"{memory}Gi", GPU_RESOURCE: gpus},
    }


def rollout_timeout_s(plan: ServingPlan, checkpoint_bytes: int) -> int:
    """How long `pulumi up` waits for the workload: a node, the image, the model pull, then the startup
    budget."""
    pull = FILL_STARTUP_SECONDS + checkpoint_bytes / FILL_BYTES_PER_SECOND
    return int(NODE_LAUNCH_S + IMAGE_PULL_S + pull + vllm_probes.startup_budget_s(plan))


def selector_labels(spec: WorkloadSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": APP, "app.kubernetes.io/instance": spec.name}


def workload_labels(spec: WorkloadSpec, role: str = "server") -> dict[str, str]:
    return {
        **spec.labels,
        **selector_labels(spec),
        "app.kubernetes.io/component": "model-server",
        REVISION_LABEL: spec.revision,
        ROLE_LABEL: role,
    }


def _size_gib(volume: Mapping[str, Any]) -> int:
    limit = str((volume.get("emptyDir") or {}).get("sizeLimit", "0Gi"))
    return int(limit.removesuffix("Gi")) if limit.endswith("Gi") else 0


def _volumes(spec: WorkloadSpec) -> list[Manifest]:
    patch_volumes = [v for v in spec.cache_patch.volumes if v["name"] != TMP_VOLUME]
    return [
        *patch_volumes,
        {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": f"{TMP_GIB}Gi"}},
        {"name": "home", "emptyDir": {"sizeLimit": f"{HOME_CACHE_GIB}Gi"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib(spec.plan)}Gi"}},
    ]


def vllm_arguments(spec: WorkloadSpec, role: str) -> list[str]:
    """The container's arguments (after `vllm serve`), with a node's rank in a multi-node replica."""
    args = serve_args(
        spec.plan,
        model_args=spec.cache_patch.model_args,
        served_name=spec.served_name,
        extra_args=spec.extra_args,
        extra_args_key=spec.extra_args_key,
    )
    if role == "leader":
        args += node_args(rank="0", leader_address="$(LWS_LEADER_ADDRESS)", leader=True)
    elif role == "worker":
        args += node_args(rank="$(LWS_WORKER_INDEX)", leader_address="$(LWS_LEADER_ADDRESS)", leader=False)
    return args


def vllm_container(spec: WorkloadSpec, role: str) -> Manifest:
    volumes = _volumes(spec)
    ephemeral = sum(_size_gib(v) for v in volumes if (v.get("emptyDir") or {}).get("medium") != "Memory")
    env = [
        api_key_env(spec.api_key_secret.name, spec.api_key_secret.key),
        *spec.cache_patch.env,
        {"name": "HOME", "value": HOME},
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
        {"name": "DO_NOT_TRACK", "value": "1"},
    ]
    container: Manifest = {
        "name": APP,
        "image": spec.image,
        "args": vllm_arguments(spec, role),
        "env": env,
        "resources": pod_resources(spec.plan, spec.instance, ephemeral),
        "securityContext": container_security_context(),
        "volumeMounts": [
            *spec.cache_patch.volume_mounts,
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            {"name": "home", "mountPath": HOME},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ],
    }
    if role == "worker":
        # A headless worker has no API server: no HTTP port and no /health to probe. The group restarts
        # as a whole when any of its pods fails (RecreateGroupOnPodRestart).
        container["ports"] = [{"name": "multi-node", "containerPort": MULTI_NODE_PORT}]
    else:
        container["ports"] = [{"name": PORT_NAME, "containerPort": SERVE_PORT}]
        container.update(vllm_probes.probes(spec.plan))
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_PAUSE_S}}}
    return container


def pod_spec(spec: WorkloadSpec, role: str = "server") -> Manifest:
    pod: Manifest = {
        "serviceAccountName": spec.cache_patch.service_account_name,
        "automountServiceAccountToken": False,  # vLLM never talks to the API server
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_S,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_UID,
            "runAsGroup": IMAGE_UID,
            "fsGroup": IMAGE_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "nodeSelector": dict(spec.node_selector),
        "tolerations": [dict(t) for t in spec.tolerations],
        "initContainers": spec.cache_patch.init_containers,
        "containers": [vllm_container(spec, role)],
        "volumes": _volumes(spec),
    }
    if spec.spread and not spec.multi_node:
        selector = {"matchLabels": selector_labels(spec)}
        pod["affinity"] = {
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": selector, "topologyKey": "kubernetes.io/hostname"}
                ]
            }
        }
        pod["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
            }
        ]
    return pod


def _metadata(spec: WorkloadSpec, name: str, labels: Mapping[str, str]) -> Manifest:
    return {"name": name, "namespace": spec.namespace, "labels": dict(labels)}


def deployment(spec: WorkloadSpec) -> Manifest:
    metadata = _metadata(spec, spec.name, workload_labels(spec))
    metadata["annotations"] = {TIMEOUT_ANNOTATION: str(rollout_timeout_s(spec.plan, spec.checkpoint_bytes))}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(spec)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": SURGE}},
            "progressDeadlineSeconds": rollout_timeout_s(spec.plan, spec.checkpoint_bytes),
            "template": {"metadata": {"labels": workload_labels(spec)}, "spec": pod_spec(spec)},
        },
    }


def leader_worker_set(spec: WorkloadSpec) -> Manifest:
    """One replica = one group of `nodes_per_replica` pods, a node each: the leader serves HTTP at rank 0,
    workers join it headless. `LeaderCreated` starts workers with the leader, because under vLLM's mp
    backend the leader's /health waits for its workers (`LeaderReady` would wait forever)."""
    metadata = _metadata(spec, spec.name, workload_labels(spec, "leader"))
    metadata["annotations"] = {TIMEOUT_ANNOTATION: str(rollout_timeout_s(spec.plan, spec.checkpoint_bytes))}
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 0, "maxSurge": SURGE},
            },
            "leaderWorkerTemplate": {
                "size": spec.plan.nodes_per_replica,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": workload_labels(spec, "leader")},
                    "spec": pod_spec(spec, "leader"),
                },
                "workerTemplate": {
                    "metadata": {"labels": workload_labels(spec, "worker")},
                    "spec": pod_spec(spec, "worker"),
                },
            },
        },
    }


def serving_selector(spec: WorkloadSpec) -> dict[str, str]:
    """The pods that answer HTTP: every pod of a single-node revision, the leaders of a multi-node one."""
    return {**selector_labels(spec), ROLE_LABEL: "leader" if spec.multi_node else "server"}


def service(spec: WorkloadSpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, spec.name, workload_labels(spec)),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_selector(spec),
            "ports": [{"name": PORT_NAME, "port": SERVE_PORT, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(spec: WorkloadSpec) -> Manifest | None:
    """Keeps `replicas.min` serving through drains and Karpenter's disruptions (spot interruptions are
    not voluntary and ignore it). None when the minimum is 0: there is nothing to protect."""
    if spec.min_available < 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, spec.name, workload_labels(spec)),
        "spec": {"minAvailable": spec.min_available, "selector": {"matchLabels": serving_selector(spec)}},
    }


def workload(spec: WorkloadSpec) -> Manifest:
    return leader_worker_set(spec) if spec.multi_node else deployment(spec)


def workload_manifests(spec: WorkloadSpec) -> list[Manifest]:
    """The revision's workload, Service and (when it has a serving minimum) PodDisruptionBudget."""
    budget = pod_disruption_budget(spec)
    return [workload(spec), service(spec), *([budget] if budget else [])]
