"""`Monitoring`: Prometheus, Grafana and alerting (kube-prometheus-stack), GPU metrics (DCGM exporter) and
KEDA, plus what ties them to the vLLM revisions: a PodMonitor and a ScaledObject per revision, the
PrometheusRule, and the dashboards as ConfigMaps. Every object comes from the pure builders in
infra/observability; this component only creates them, in order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from infra.components import kubernetes_labels
from infra.errors import UserError
from infra.kubernetes import wake as wake_routes
from infra.observability import autoscaling, charts, dashboards, manifests
from infra.observability.manifests import MANAGED_BY as MANAGED_LABELS
from infra.observability.rules import AlertThresholds
from infra.versions import (
    DCGM_EXPORTER_REPO,
    DCGM_EXPORTER_VERSION,
    KEDA_HTTP_ADD_ON_CHART,
    KEDA_HTTP_ADD_ON_VERSION,
    KEDA_REPO,
    KEDA_VERSION,
    KUBE_PROMETHEUS_STACK_REPO,
    KUBE_PROMETHEUS_STACK_VERSION,
)

# Releases take their chart's name, so the chart's Service names (and the URLs below) are known in advance.
STACK_RELEASE = "kube-prometheus-stack"
GRAFANA_SERVICE = f"{STACK_RELEASE}-grafana"
PROMETHEUS_SERVICE = f"{STACK_RELEASE}-prometheus"
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"
GENERATED_PASSWORD_LENGTH = 32


@dataclass(frozen=True)
class MonitoredRevision:
    """One vLLM revision as monitoring sees it: where its pods run, what KEDA scales, what was planned."""

    revision: str
    namespace: str
    scale_target: manifests.ScaleTarget
    autoscaling: manifests.Autoscaling
    plan: dashboards.CapacityPlan
    metrics_port: str = "http"  # the container port name serving /metrics
    # For minReplicas 0: the HTTP add-on's route that holds requests and wakes the revision (vLLM's metrics
    # vanish with the last pod, so only a component that runs at zero can say a request arrived).
    wake: wake_routes.WakeRoute | None = None
    pool: manifests.PoolShape | None = None  # when given, maxReplicas must fit it

    def __post_init__(self) -> None:
        if self.pool is not None:
            manifests.check_pool_capacity(self.autoscaling, self.pool)

    def wake_triggers(self, prometheus_url: str) -> list[dict[str, object]]:
        if self.wake is None:
            return []
        trigger = autoscaling.wake_trigger(self.namespace, self.wake.name, self.wake.concurrency_per_replica)
        return [trigger.keda(prometheus_url, ignore_null_values=True)]


@dataclass(frozen=True)
class MonitoringArgs:
    revisions: Sequence[MonitoredRevision]
    storage: charts.PrometheusStorage = field(default_factory=charts.PrometheusStorage)
    thresholds: AlertThresholds = field(default_factory=AlertThresholds)
    namespace: str = "monitoring"
    keda_namespace: str = "keda"
    tags: Mapping[str, str] = field(default_factory=dict)
    depends_on: Sequence[pulumi.Resource] = ()  # what must exist first (nodes to run on)

    def __post_init__(self) -> None:
        names = [r.revision for r in self.revisions]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise UserError(
                f"each revision may appear once; repeated: {', '.join(duplicated)}", key="revisions"
            )


class Monitoring(pulumi.ComponentResource):
    """Needs a Kubernetes provider (through `opts.providers`) for the cluster."""

    grafana_admin_password: pulumi.Output[str]
    grafana_admin_user: pulumi.Output[str]
    grafana_port_forward: pulumi.Output[str]
    prometheus_port_forward: pulumi.Output[str]
    prometheus_url: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-serving:index:Monitoring", name, None, opts)
        labels = kubernetes_labels(args.tags)
        prometheus_url = f"http://{PROMETHEUS_SERVICE}.{args.namespace}.svc:9090"

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=args.namespace, labels=labels),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        password = random.RandomPassword(
            f"{name}-grafana-password", length=GENERATED_PASSWORD_LENGTH, special=False, opts=in_namespace
        ).result
        self.grafana_admin_password = pulumi.Output.secret(password)
        admin_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=GRAFANA_ADMIN_SECRET, namespace=args.namespace, labels=labels
            ),
            type="Opaque",
            string_data={
                charts.GRAFANA_ADMIN_USER_KEY: GRAFANA_ADMIN_USER,
                charts.GRAFANA_ADMIN_PASSWORD_KEY: self.grafana_admin_password,
            },
            opts=in_namespace,
        )
        stack = _release(
            f"{name}-stack",
            "kube-prometheus-stack",
            (KUBE_PROMETHEUS_STACK_VERSION, KUBE_PROMETHEUS_STACK_REPO),
            args.namespace,
            charts.kube_prometheus_stack_values(args.storage, grafana_admin_secret=GRAFANA_ADMIN_SECRET),
            pulumi.ResourceOptions(parent=self, depends_on=[namespace, admin_secret]),
        )
        # The stack brings the monitoring CRDs (ServiceMonitor, PodMonitor, PrometheusRule).
        after_stack = pulumi.ResourceOptions(parent=self, depends_on=[stack])
        _release(
            f"{name}-dcgm-exporter",
            "dcgm-exporter",
            (DCGM_EXPORTER_VERSION, DCGM_EXPORTER_REPO),
            args.namespace,
            charts.dcgm_exporter_values(scrape_interval=args.storage.scrape_interval),
            after_stack,
        )
        keda = _release(
            f"{name}-keda",
            "keda",
            (KEDA_VERSION, KEDA_REPO),
            args.keda_namespace,
            charts.keda_values(),
            pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
        )

        waking = [revision for revision in args.revisions if revision.wake and revision.wake.routed]
        if waking:
            self._wake_path(name, waking, labels, after=[keda, stack])

        boards = dashboards.all_dashboards([revision.plan for revision in args.revisions])
        for config_map in manifests.dashboard_config_maps(namespace=args.namespace, dashboards=boards):
            k8s.core.v1.ConfigMap(
                f"{name}-{config_map['metadata']['name']}",
                metadata=self._metadata(config_map, labels),
                data=config_map["data"],
                opts=in_namespace,
            )
        self._custom_resource(
            f"{name}-rules",
            manifests.prometheus_rule(namespace=args.namespace, thresholds=args.thresholds),
            labels,
            after_stack,
        )
        for revision in args.revisions:
            self._custom_resource(
                f"{name}-{revision.revision}-podmonitor",
                manifests.pod_monitor(
                    namespace=revision.namespace, revision=revision.revision, port=revision.metrics_port
                ),
                labels,
                after_stack,
            )
            self._custom_resource(
                f"{name}-{revision.revision}-scaledobject",
                manifests.scaled_object(
                    namespace=revision.namespace,
                    revision=revision.revision,
                    target=revision.scale_target,
                    autoscaling=revision.autoscaling,
                    prometheus_url=prometheus_url,
                    pod_regex=f"{revision.scale_target.name}-.*",
                    extra_triggers=revision.wake_triggers(prometheus_url),
                ),
                labels,
                pulumi.ResourceOptions(parent=self, depends_on=[keda, stack]),
            )

        self.prometheus_url = pulumi.Output.from_input(prometheus_url)
        self.grafana_admin_user = pulumi.Output.from_input(GRAFANA_ADMIN_USER)
        self.grafana_port_forward = pulumi.Output.from_input(
            f"kubectl -n {args.namespace} port-forward svc/{GRAFANA_SERVICE} 3000:80  # then http://127.0.0.1:3000"
        )
        self.prometheus_port_forward = pulumi.Output.from_input(
            f"kubectl -n {args.namespace} port-forward svc/{PROMETHEUS_SERVICE} 9090  # then http://127.0.0.1:9090"
        )
        self.register_outputs(
            {
                "grafanaAdminPassword": self.grafana_admin_password,
                "grafanaAdminUser": self.grafana_admin_user,
                "grafanaPortForward": self.grafana_port_forward,
                "prometheusPortForward": self.prometheus_port_forward,
                "prometheusUrl": self.prometheus_url,
            }
        )

    def _wake_path(
        self,
        name: str,
        waking: Sequence[MonitoredRevision],
        labels: Mapping[str, str],
        after: Sequence[pulumi.Resource],
    ) -> None:
        """The HTTP add-on (its CRDs, operator and interceptors) in the workload's namespace, where the Ingress
        can name the interceptor; a route and a Service per waking revision; the interceptors' PodMonitor."""
        namespace = waking[0].namespace
        add_on = _release(
            f"{name}-http-add-on",
            KEDA_HTTP_ADD_ON_CHART,
            (KEDA_HTTP_ADD_ON_VERSION, KEDA_REPO),
            namespace,
            charts.http_add_on_values(),
            # its chart scales the interceptors with a ScaledObject: KEDA's CRDs first
            pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        self._custom_resource(
            f"{name}-interceptor-podmonitor",
            manifests.interceptor_pod_monitor(namespace=namespace),
            labels,
            pulumi.ResourceOptions(parent=self, depends_on=list(after)),
        )
        for revision in waking:
            assert revision.wake is not None
            self._custom_resource(
                f"{name}-{revision.revision}-route",
                wake_routes.interceptor_route(revision.wake, MANAGED_LABELS),
                labels,
                pulumi.ResourceOptions(parent=self, depends_on=[add_on]),
            )
            service = wake_routes.wake_service(revision.wake, MANAGED_LABELS)
            k8s.core.v1.Service(
                f"{name}-{revision.revision}-wake",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=service["metadata"]["name"],
                    namespace=service["metadata"]["namespace"],
                    labels={**service["metadata"]["labels"], **labels},
                    annotations=service["metadata"]["annotations"],
                ),
                spec=service["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=[add_on]),
            )

    @staticmethod
    def _metadata(manifest: Mapping[str, Any], labels: Mapping[str, str]) -> k8s.meta.v1.ObjectMetaArgs:
        metadata = manifest["metadata"]
        return k8s.meta.v1.ObjectMetaArgs(
            name=metadata["name"], namespace=metadata["namespace"], labels={**metadata["labels"], **labels}
        )

    def _custom_resource(
        self,
        resource_name: str,
        manifest: Mapping[str, Any],
        labels: Mapping[str, str],
        child_opts: pulumi.ResourceOptions,
    ) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            resource_name,
            api_version=manifest["apiVersion"],
            kind=manifest["kind"],
            metadata=self._metadata(manifest, labels),
            spec=manifest["spec"],
            opts=child_opts,
        )


def _release(
    resource_name: str,
    chart: str,
    pin: tuple[str, str],
    namespace: str,
    values: Mapping[str, Any],
    child_opts: pulumi.ResourceOptions,
) -> k8s.helm.v3.Release:
    """A chart at its pinned (version, repository), released under the chart's own name so its Service names
    are known in advance."""
    version, repository = pin
    return k8s.helm.v3.Release(
        resource_name,
        name=chart,
        chart=chart,
        version=version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=repository),
        namespace=namespace,
        create_namespace=True,
        values=dict(values),
        opts=child_opts,
    )
