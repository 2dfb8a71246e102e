"""llm-serving: settings -> plans -> components -> exports.

`pulumi up` runs this file; `python -m infra render` runs it too, under Pulumi's mock runtime.
"""

import pulumi
import pulumi_aws as aws

from infra import program
from infra.components.cluster import Cluster
from infra.components.gpu_node_pool import GpuNodePool, GpuNodePoolArgs
from infra.components.model_cache import ModelCache
from infra.components.monitoring import Monitoring
from infra.components.serving_endpoint import ServingEndpoint
from infra.components.serving_image import ServingImage
from infra.components.serving_secrets import ServingSecrets, ServingSecretsArgs
from infra.components.vllm_service import VllmService
from infra.config import load_settings

with program.user_errors():
    settings = load_settings()
    program.check_model_access(settings)
    plans = program.build_plans(settings)
    cost_at_max = program.check_plan_cost(settings, plans)
    cluster_args = program.cluster_args(settings, plans)
pulumi.log.info(program.describe_plans(settings, plans, cost_at_max))

aws_provider = aws.Provider(f"{settings.name}-aws", region=settings.region)
cluster = Cluster(
    settings.name,
    cluster_args,
    opts=pulumi.ResourceOptions(providers={"aws": aws_provider}),
)
on_cluster = pulumi.ResourceOptions(providers={"aws": aws_provider, "kubernetes": cluster.provider})
secrets = ServingSecrets(
    f"{settings.name}-secrets",
    ServingSecretsArgs(
        namespace=cluster.workload_namespace,
        api_key=settings.api_key,
        hf_token=settings.hf_token,
        tags=settings.tags,
    ),
    opts=on_cluster,
)
image = ServingImage(
    f"{settings.name}-serving-image",
    program.serving_image_args(settings),
    opts=pulumi.ResourceOptions(providers={"aws": aws_provider}),
)
cache_args = program.model_cache_args(
    settings, cluster_name=cluster.cluster_name, namespace=cluster.workload_namespace
)
model_cache = ModelCache(f"{settings.name}-model-cache", cache_args, opts=on_cluster)
wiring = program.ServiceWiring(
    namespace=cluster.workload_namespace,
    image=image.image_ref,
    bucket=model_cache.bucket_name,
    reader_service_account=cache_args.reader_service_account,
    writer_service_account=cache_args.writer_service_account,
    api_key_secret_name=secrets.api_key_secret_name,
    hf_token_secret_name=secrets.hf_token_secret_name,
)

services: dict[str, VllmService] = {}
pools: dict[str, GpuNodePoolArgs] = {}
# one fill Job per cache entry (a model's or an adapter's), however many revisions read it
filled: dict[tuple[str, str], pulumi.Resource] = {}
with program.user_errors():
    for index, revision in enumerate(settings.revisions):
        plan = plans[revision.name]
        pools[revision.name] = program.gpu_pool_args(
            settings,
            revision,
            plan,
            cluster_name=cluster.cluster_name,
            node_role=cluster.karpenter_node_role,
            install_device_plugin=index == 0,
            depends_on=cluster.ready,
        )
        pool = GpuNodePool(f"{settings.name}-gpu-{revision.name}", pools[revision.name], opts=on_cluster)
        model_entry, *adapter_entries = program.cache_entries(
            program.revision_cache(settings, revision, plan)
        )
        service = VllmService(
            f"{settings.name}-{revision.name}",
            program.vllm_service_args(
                settings,
                revision,
                plan,
                wiring,
                node_selector=pool.node_selector,
                tolerations=pool.tolerations,
                fill_cache=model_entry not in filled,
                adapters_filled_elsewhere=frozenset(e for e in adapter_entries if e in filled),
                fill_after=model_cache.writer_ready,
                serve_after=[
                    *model_cache.reader_ready,
                    pool,
                    *(filled[e] for e in dict.fromkeys([model_entry, *adapter_entries]) if e in filled),
                ],
            ),
            opts=on_cluster,
        )
        filled = {**service.fill_jobs, **filled}
        services[revision.name] = service

    monitoring = Monitoring(
        f"{settings.name}-monitoring",
        # not after the workloads: Prometheus comes up while the cache fills; KEDA waits for its targets
        program.monitoring_args(
            settings,
            plans,
            pools,
            storage_class=cluster.storage_class,
            depends_on=[*cluster.ready, *cluster.storage_ready],
        ),
        opts=on_cluster,
    )
    endpoint = ServingEndpoint(
        f"{settings.name}-endpoint",
        program.endpoint_args(
            settings,
            plans,
            cluster_name=cluster.cluster_name,
            vpc_id=cluster.vpc_id,
            namespace=cluster.workload_namespace,
            load_balancer_cidrs=cluster.load_balancer_cidrs,
            depends_on=[*cluster.ready, *services.values(), monitoring],  # a waking revision's interceptor
        ),
        opts=on_cluster,
    )

pulumi.export("plan", program.plan_summary(settings, plans, cost_at_max))
pulumi.export("endpointUrl", endpoint.url)
pulumi.export("apiKey", secrets.api_key)
pulumi.export("servedModels", program.served_models(settings, plans))
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("namespace", cluster.workload_namespace)
pulumi.export("services", {name: service.service_name for name, service in services.items()})
pulumi.export("modelCacheBucket", model_cache.bucket_name)
pulumi.export("servingImage", image.image_ref)
pulumi.export("apiKeySecretName", secrets.api_key_secret_name)
pulumi.export("hfTokenSecretName", secrets.hf_token_secret_name)
pulumi.export("grafanaAdminUser", monitoring.grafana_admin_user)
pulumi.export("grafanaAdminPassword", monitoring.grafana_admin_password)
pulumi.export("grafanaPortForward", monitoring.grafana_port_forward)
pulumi.export("prometheusPortForward", monitoring.prometheus_port_forward)
pulumi.export("prometheusUrl", monitoring.prometheus_url)  # in-cluster address (KEDA's)
