"""Validate custom resources against their CRD's openAPIV3Schema from ../shared/k8s-schemas, strictly.

A real API server prunes unknown fields of a structural schema silently; here every object schema that
lists its properties rejects others (like `kubectl --validate=strict`), so a misspelt field fails the test.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.versions import KUBERNETES_VERSIONS
from tests.conftest import shared_path

CRD_FILES = {
    ("karpenter.sh/v1", "NodePool"): "karpenter.sh_nodepools.yaml",
    ("karpenter.k8s.aws/v1", "EC2NodeClass"): "karpenter.k8s.aws_ec2nodeclasses.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_triggerauthentications.yaml",
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"): "leaderworkerset.x-k8s.io_leaderworkersets.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
    ("gateway.networking.k8s.io/v1", "Gateway"): "gateway.networking.k8s.io_gateways.yaml",
    ("http.keda.sh/v1beta1", "InterceptorRoute"): "http.keda.sh_interceptorroutes.yaml",
}
# CRDs only `make schemas` brings (../shared lacks them): tests validate their objects when present.
FETCHED_ONLY = {("http.keda.sh/v1beta1", "InterceptorRoute")}


def crd_available(manifest: dict[str, Any]) -> bool:
    """False for an object whose CRD is neither fetched nor in ../shared (only FETCHED_ONLY ones can be)."""
    key = (manifest["apiVersion"], manifest["kind"])
    if key not in FETCHED_ONLY:
        return True
    try:
        shared_path("k8s-schemas", CRD_FILES[key])
    except pytest.skip.Exception:
        return False
    return True


def _python_pattern(pattern: str) -> str:
    """Go's RE2 takes inline flags anywhere (PrometheusRule: `^(?i)(abort|warn)?$`); Python wants them first."""
    inline = re.compile(r"\(\?([a-z]+)\)")
    flags = "".join(inline.findall(pattern))
    return f"(?{flags})" + inline.sub("", pattern) if flags else pattern


def _strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if isinstance(schema.get("pattern"), str):
            schema["pattern"] = _python_pattern(schema["pattern"])
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def is_custom_resource(manifest: dict[str, Any]) -> bool:
    """True for objects of a CRD (which kubernetes-validate cannot check), False for built-in kinds."""
    if (manifest["apiVersion"], manifest["kind"]) in CRD_FILES:
        return True
    group = manifest["apiVersion"].rpartition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


@cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    file_name = CRD_FILES.get((api_version, kind))
    assert file_name, f"no CRD in ../shared/k8s-schemas for {api_version} {kind}"
    crd = yaml.safe_load(shared_path("k8s-schemas", file_name).read_text())
    version = api_version.rpartition("/")[2]
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    # metadata is the API server's ObjectMeta, validated there, not by the CRD
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def validate_custom_resource(manifest: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the manifest does not match its CRD."""
    jsonschema.validate(manifest, crd_schema(manifest["apiVersion"], manifest["kind"]))


def validate_rendered(out: Path) -> None:
    """Every object under a render's output: its CRD's schema, or Kubernetes' own strictly for each allowed
    version. An object whose CRD only `make schemas` brings is left to the test that validates it and skips
    naming the file (tests/test_render.py::test_scale_from_zero_objects_validate), so the rest still count."""
    for path in sorted(out.rglob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        if is_custom_resource(manifest):
            if crd_available(manifest):
                validate_custom_resource(manifest)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{path.name} is invalid for Kubernetes {version}: {error.message}")
