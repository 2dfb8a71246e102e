"""Every version this program deploys, pinned in one place. Bumping vLLM is one change here plus the
flag and metric checks in tests/ that read ../shared/vllm-<version>/."""

VLLM_VERSION = "0.33.0"

# Kubernetes minor versions a new cluster may run (stack key kubernetesVersion, whose description in
# Pulumi.yaml lists them too; a test keeps it equal). Every rendered object is validated against each.
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33")
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"

# The GPU node pool (infra/components/gpu_node_pool.py) and the cluster add-ons (infra/components/cluster.py).
KARPENTER_VERSION = "1.14.1"
KARPENTER_CHART = "oci://public.ecr.aws/karpenter/karpenter"
NVIDIA_DEVICE_PLUGIN_VERSION = "0.20.0"
NVIDIA_DEVICE_PLUGIN_REPO = "https://nvidia.github.io/k8s-device-plugin"
# Karpenter resolves the alias to the AL2023 NVIDIA variant on GPU instances; pinned, as Karpenter advises
# for anything past a sandbox (karpenter.sh "Managing AMIs"). Bump it here, stack by stack.
EKS_AMI_ALIAS = "al2023@v20260903"
# The endpoint (infra/components/serving_endpoint.py): the ALB comes from the AWS Load Balancer Controller.
AWS_LOAD_BALANCER_CONTROLLER_VERSION = "3.5.0"  # chart 3.5.0 = controller v3.5.0
AWS_LOAD_BALANCER_CONTROLLER_REPO = "https://aws.github.io/eks-charts"
# Multi-node replicas (infra/components/vllm_service.py) run as LeaderWorkerSets.
LWS_VERSION = "0.10.0"
LWS_CHART = "oci://registry.k8s.io/lws/charts/lws"

# Prometheus bundled into the single-container image (images/standalone/Dockerfile repeats these as ARG
# defaults; a test keeps them equal). The sha256 is the release's sha256sums.txt entry for linux-amd64.
STANDALONE_PROMETHEUS_VERSION = "3.15.0"
STANDALONE_PROMETHEUS_SHA256 = "2a542df32eac02ee17b9d844fb2aa1de00dafa5476579ba8a3ba862e9d572ea0"

# Monitoring and autoscaling charts (infra/observability/charts.py); their default values are in
# ../shared/k8s-schemas/charts/, which tests check our values keys against.
KUBE_PROMETHEUS_STACK_VERSION = "88.5.3"
KUBE_PROMETHEUS_STACK_REPO = "https://prometheus-community.github.io/helm-charts"
DCGM_EXPORTER_VERSION = "4.8.2"
DCGM_EXPORTER_REPO = "https://nvidia.github.io/dcgm-exporter/helm-charts"
KEDA_VERSION = "2.20.2"
KEDA_REPO = "https://kedacore.github.io/charts"
# Scale from zero: the HTTP add-on's interceptor holds requests while a revision at zero replicas starts
# (infra/kubernetes/wake.py). Same chart repository as KEDA; its CRDs come with the chart.
KEDA_HTTP_ADD_ON_VERSION = "0.15.0"
KEDA_HTTP_ADD_ON_CHART = "keda-add-ons-http"
