"""The upstream files the tests validate against (CRDs, Helm chart values), pinned by commit and sha256.

Nothing upstream is committed: `make schemas` runs this module to fetch each file into `.schemas/` (ignored
by git), checking its sha256; tests read `.schemas/`, else `../shared` where CI provides the same files.
A file whose hash differs is refused, never written.

    python -m tests.upstream_files [--into DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
FETCHED = REPO_ROOT / ".schemas"
RAW = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class UpstreamFile:
    path: str  # under k8s-schemas/, as the tests name it
    url: str  # a raw file at a pinned commit
    sha256: str


def _raw(repo: str, commit: str, path: str) -> str:
    return f"{RAW}/{repo}/{commit}/{path}"


_PROMETHEUS = ("prometheus-community/helm-charts", "ea930baeebeba39f56d6b44e351f23b2a072a600")  # kps 88.5.3
_KEDA = ("kedacore/keda", "68a5b5028f35b22d50597c69819ab32c4e92f21a")  # v2.20.2
_KARPENTER = ("aws/karpenter-provider-aws", "bde00654cd316fddb3dccfba3f5ac07039865429")  # v1.14.1
_KARPENTER_RELEASE = (
    "aws/karpenter-provider-aws",
    "c88abbbad455186e69e30296c595e474123e9bc1",
)  # release-v1.14.1
_LWS = ("kubernetes-sigs/lws", "2161f38ff333f9e24d3c44adef7cd5d9787cac00")  # v0.10.0
_GATEWAY = ("kubernetes-sigs/gateway-api", "8bb74df00e56ec8f944d48c25e6c1c9c2f6848e3")  # v1.6.1
_CRDS = "charts/kube-prometheus-stack/charts/crds/crds"
# Not in ../shared/k8s-schemas: without `make schemas` the tests that need these skip.
_HTTP_ADD_ON = ("kedacore/http-add-on", "4ea8a863bd7c16464dc5afbe9ebc8a26e563fac0")  # v0.15.0
_HTTP_ADD_ON_CHART = ("kedacore/charts", "c4b92e9eed0ddc6668b1395d5f137e3ad4baa3d4")  # http-add-on 0.15.0

# (path under k8s-schemas/, (repository, commit), path in the repository, sha256 of the file)
_TABLE: tuple[tuple[str, tuple[str, str], str, str], ...] = (
    (
        "monitoring.coreos.com_podmonitors.yaml",
        _PROMETHEUS,
        f"{_CRDS}/crd-podmonitors.yaml",
        "41de2587baafa31240438654a3ae5dc19ef40296c31cb186855fa4ce85b03fb9",
    ),
    (
        "monitoring.coreos.com_servicemonitors.yaml",
        _PROMETHEUS,
        f"{_CRDS}/crd-servicemonitors.yaml",
        "3322d612f23bf144c887c94bf247b0b4a69189adf37c0d482d2c6267ffe906ab",
    ),
    (
        "monitoring.coreos.com_prometheusrules.yaml",
        _PROMETHEUS,
        f"{_CRDS}/crd-prometheusrules.yaml",
        "72b1e5f9959e67990d1598eb31b24ca4415007e31df3916356ef216316b2bf40",
    ),
    (
        "keda.sh_scaledobjects.yaml",
        _KEDA,
        "config/crd/bases/keda.sh_scaledobjects.yaml",
        "af35555862a83933b074af14ad439c4b4ceabaf4daa3e9338e9b23e36d308d80",
    ),
    (
        "keda.sh_triggerauthentications.yaml",
        _KEDA,
        "config/crd/bases/keda.sh_triggerauthentications.yaml",
        "275307b4cb19ca8f0f506a879282aa4c67587ac16ec757f494d6585c5c185d65",
    ),
    (
        "karpenter.sh_nodepools.yaml",
        _KARPENTER,
        "pkg/apis/crds/karpenter.sh_nodepools.yaml",
        "3bb64a20c80776b77aa19a699ebdaf34480a7b2e7ec4ef890b43225b3517f878",
    ),
    (
        "karpenter.k8s.aws_ec2nodeclasses.yaml",
        _KARPENTER,
        "pkg/apis/crds/karpenter.k8s.aws_ec2nodeclasses.yaml",
        "62dec59f01c0972d4503ca3ed25f243ba9c2f561be0d964ce7a14c8df406132f",
    ),
    (
        "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
        _LWS,
        "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml",
        "c5dcad8ed943e495490241f00b9a1b45d51203b6d484020db3636d5bf553568e",
    ),
    (
        "gateway.networking.k8s.io_httproutes.yaml",
        _GATEWAY,
        "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
        "a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852",
    ),
    (
        "gateway.networking.k8s.io_gateways.yaml",
        _GATEWAY,
        "config/crd/standard/gateway.networking.k8s.io_gateways.yaml",
        "25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a",
    ),
    (
        "charts/kube-prometheus-stack-88.5.3-values.yaml",
        _PROMETHEUS,
        "charts/kube-prometheus-stack/values.yaml",
        "659289e3cc0ff503db75dd2969c8fe7295657357b82ff085d0b2a824d68b7755",
    ),
    (
        "charts/keda-2.20.2-values.yaml",
        ("kedacore/charts", "cbb9bb8ce0809dc9048f72302f7c09765d66ed56"),
        "keda/values.yaml",
        "5e5056a3f602830e08456338ac9172dad39449ac079be5872ef3774c2b392b1d",
    ),
    (
        "charts/karpenter-1.14.1-values.yaml",
        _KARPENTER_RELEASE,
        "charts/karpenter/values.yaml",
        "38652eae97bec5bf709a394d1f4260398ed8c564f567927bb19fe46f7a6fa4ab",
    ),
    (
        "charts/nvidia-device-plugin-0.20.0-values.yaml",
        ("NVIDIA/k8s-device-plugin", "1b826acc6af3079d8923bac395c3124b8861a9a6"),
        "deployments/helm/nvidia-device-plugin/values.yaml",
        "ad339b160fc56d4ab4648a88e79b1eed277a15142e2e314734ee17bcd672b648",
    ),
    (
        "charts/dcgm-exporter-4.8.2-values.yaml",
        ("NVIDIA/dcgm-exporter", "691c92762eb551313c825f6efe4ceeee20982801"),
        "deployment/values.yaml",
        "f3d8522a4c720e2f7fcda86bbd4aa852d39b3908a4ffd202b7479aab1dbac4fa",
    ),
    (
        "charts/aws-load-balancer-controller-3.5.0-values.yaml",
        ("aws/eks-charts", "5239609242f3430be50fb0b714a24d3ef2b47983"),
        "stable/aws-load-balancer-controller/values.yaml",
        "c330e0b3aaeed9d6b75e70564563dcdb231ee970db587f23eff5c013461f2dd4",
    ),
    (
        "http.keda.sh_interceptorroutes.yaml",
        _HTTP_ADD_ON,
        "config/crd/bases/http.keda.sh_interceptorroutes.yaml",
        "a706e998936b0ba41ff890673be57578f6280b0b3308e9b86b67b745d7b3480b",
    ),
    (
        "charts/keda-add-ons-http-0.15.0-values.yaml",
        _HTTP_ADD_ON_CHART,
        "http-add-on/values.yaml",
        "362c763523150ae3e6476fdf9798e579f98da419f62be418b839eb05b3e176b7",
    ),
    (
        "charts/lws-0.10.0-values.yaml",
        _LWS,
        "charts/lws/values.yaml",
        "1c4ec6d776f99f0b5eb41b0aabfd0f2d49e891469ad64f47c0ed34c629508985",
    ),
)
K8S_SCHEMAS = tuple(
    UpstreamFile(path, _raw(*source, upstream), sha) for path, source, upstream, sha in _TABLE
)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(file: UpstreamFile, into: Path, timeout_s: float = 60) -> bool:
    """Download `file` into `into/k8s-schemas/<path>` unless it is already there with the right hash.
    Returns True when it downloaded. Raises ValueError, writing nothing, when the hash differs."""
    target = into / "k8s-schemas" / file.path
    if target.is_file() and sha256_of(target) == file.sha256:
        return False
    with urllib.request.urlopen(file.url, timeout=timeout_s) as response:  # pinned https URLs only
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        raise ValueError(f"{file.url}: sha256 {digest}, expected {file.sha256}; nothing written")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as handle:
        handle.write(data)
    os.replace(handle.name, target)  # atomic: a reader never sees half a file
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--into", type=Path, default=FETCHED)
    args = parser.parse_args()
    failures = []
    for file in K8S_SCHEMAS:
        try:
            print(("fetched " if fetch(file, args.into) else "have    ") + file.path)
        except urllib.error.URLError as error:  # no network: every other file would fail the same way
            sys.exit(
                f"make schemas: cannot reach {RAW} ({error.reason}); tests fall back to ../shared where it exists"
            )
        except (OSError, ValueError) as error:
            failures.append(f"{file.path}: {error}")
    if failures:
        sys.exit("make schemas: " + "; ".join(failures))


if __name__ == "__main__":
    main()
