"""Pulumi's mock runtime, recording: what `python -m infra render` and the component tests run programs under.

Everything here that reaches into Pulumi's private API (`rpc._special_sig_key`, `rpc._RESOURCE_MODULES`,
`sync_await._sync_await`, the root-resource setting) is named in `PRIVATE_API` and checked when this module
is imported, so a Pulumi upgrade that moves one fails here, loudly and by name, not as a wrong render;
tests/test_mock_runtime.py checks that each one still behaves as used.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks, rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime import stack as runtime_stack
from pulumi.runtime import sync_await as runtime_sync_await

# (module, attribute): the private names this module relies on.
PRIVATE_API: tuple[tuple[Any, str], ...] = (
    (rpc, "_special_sig_key"),
    (rpc, "_special_secret_sig"),
    (rpc, "_RESOURCE_MODULES"),
    (rpc, "UNKNOWN"),
    (rpc, "deserialize_properties"),
    (runtime_sync_await, "_sync_await"),
    (runtime_settings, "ROOT"),
    (runtime_settings, "get_root_resource"),
    (runtime_stack, "run_pulumi_func"),
    (mocks, "MockMonitor"),
)


def missing_private_api() -> list[str]:
    return [f"{module.__name__}.{name}" for module, name in PRIVATE_API if not hasattr(module, name)]


if missing := missing_private_api():
    raise ImportError(
        f"this Pulumi SDK lacks {', '.join(missing)}, which infra/mock_runtime.py uses; pin the pulumi version "
        "in requirements.txt back, or update infra/mock_runtime.py for the new one"
    )

SECRET_SIG: str = rpc._special_sig_key  # the wire marker of a secret value
SECRET_VALUE: str = rpc._special_secret_sig
UNKNOWN: str = rpc.UNKNOWN  # the wire value of an output unknown during preview
STACK_TYPE = "pulumi:pulumi:Stack"
sync_await = runtime_sync_await._sync_await  # run a coroutine to completion on Pulumi's event loop
run_pulumi_func = runtime_stack.run_pulumi_func


def root_resource() -> Any:
    """The stack resource of the last run (its `outputs` are the stack's exports)."""
    return runtime_settings.get_root_resource()


def known_after_deploy(what: str) -> str:
    return f"<known after deploy: {what}>"


# Outputs AWS computes at deploy time, for the resource types the program uses; every one not listed
# still gets `id` and `arn` placeholders. Autonamed resources get their name with a placeholder suffix.
_AUTONAME_FIELD = {
    "aws:iam/role:Role": "name",
    "aws:sqs/queue:Queue": "name",
    "aws:cloudwatch/eventRule:EventRule": "name",
    "aws:s3/bucket:Bucket": "bucket",
    "aws:eks/nodeGroup:NodeGroup": "nodeGroupName",
}


def _string_outputs(type_: str) -> tuple[str, ...]:
    """The `Output[str]` properties of a resource type (its provider SDK's class), by their Pulumi names.
    These are the scalar outputs AWS or Kubernetes compute (ARNs, URLs, IDs); without a value from the
    mocks they would resolve to None and silently drop out of whatever uses them."""
    if type_ in _STRING_OUTPUTS:
        return _STRING_OUTPUTS[type_]
    modules = rpc._RESOURCE_MODULES.get(type_.rpartition(":")[0], [])  # filled as provider SDKs are imported
    for module in modules:
        info = getattr(module, "mod_info", None)
        class_name = (info or {}).get("classes", {}).get(type_)
        if not info or not class_name:
            continue
        cls = getattr(importlib.import_module(info["fqn"]), class_name)
        names = []
        for attribute in vars(cls).values():
            if not isinstance(attribute, property) or attribute.fget is None:
                continue
            pulumi_name = getattr(attribute.fget, "_pulumi_name", None)
            annotation = inspect.signature(attribute.fget).return_annotation
            if pulumi_name and typing.get_args(annotation) == (str,):
                names.append(pulumi_name)
        _STRING_OUTPUTS[type_] = tuple(names)
        return _STRING_OUTPUTS[type_]
    return ()


_STRING_OUTPUTS: dict[str, tuple[str, ...]] = {}


def _computed(type_: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    def later(field_name: str) -> str:
        return known_after_deploy(f"{name}.{field_name}")

    out: dict[str, Any] = {"arn": later("arn")}
    out.update({output: later(output) for output in _string_outputs(type_) if output not in inputs})
    autoname = _AUTONAME_FIELD.get(type_)
    if autoname and not inputs.get(autoname):
        out[autoname] = f"{name}-<suffix>"
    # nested outputs the program reads, which the SDK's string outputs above do not cover
    if type_ == "aws:eks/cluster:Cluster":
        out["certificateAuthority"] = {"data": later("certificateAuthority.data")}
        out["vpcConfig"] = {
            **(inputs.get("vpcConfig") or {}),
            "clusterSecurityGroupId": later("vpcConfig.clusterSecurityGroupId"),
            "vpcId": later("vpcConfig.vpcId"),
        }
        out["identities"] = [{"oidcs": [{"issuer": later("identities.oidc.issuer")}]}]
    elif type_ == "random:index/randomPassword:RandomPassword":
        out["result"] = {SECRET_SIG: SECRET_VALUE, "value": later("result")}
        out["bcryptHash"] = {SECRET_SIG: SECRET_VALUE, "value": later("bcryptHash")}
    return out


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str | None  # the parent's URN
    custom: bool
    inputs: dict[str, Any]
    dependencies: tuple[str, ...] = ()  # URNs it waits for (depends_on and the resources of its inputs)
    delete_before_replace: bool = False


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Mocks that answer like a fresh deployment: outputs are the inputs plus placeholders for what AWS
    computes, and invokes get full result shapes. Every registration is recorded by `RecordingMonitor`."""

    region: str = "us-east-1"
    registrations: list[Registration] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        if not args.custom:
            return None, {}
        state = {**args.inputs, **_computed(args.typ, args.name, args.inputs)}
        return known_after_deploy(f"{args.name}.id"), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        token = args.token
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            letters = "abc"
            return {
                "id": self.region,
                "names": [f"{self.region}{letter}" for letter in letters],
                "zoneIds": [known_after_deploy(f"zone id of {self.region}{letter}") for letter in letters],
                "groupNames": [self.region],
                "state": "available",
            }, []
        if token == "aws:eks/getCluster:getCluster":
            name = args.args.get("name", "cluster")
            looked_up = known_after_deploy(f"lookup of EKS cluster {name}")
            return {
                "id": name,
                "name": name,
                "arn": f"{looked_up}.arn",
                "endpoint": f"{looked_up}.endpoint",
                "certificateAuthorities": [{"data": f"{looked_up}.certificateAuthority"}],
                "version": f"{looked_up}.version",
                "status": "ACTIVE",
                "roleArn": f"{looked_up}.roleArn",
                "vpcConfig": {"vpcId": f"{looked_up}.vpcId", "subnetIds": [], "securityGroupIds": []},
                "identities": [{"oidcs": [{"issuer": f"{looked_up}.oidcIssuer"}]}],
                "accessConfigs": [{"authenticationMode": "API"}],
                "tags": {},
            }, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            account = known_after_deploy("AWS account id")
            return {"accountId": account, "arn": account, "userId": account, "id": account}, []
        if token == "aws:ec2/getVpc:getVpc":
            vpc = args.args.get("id", "vpc")
            return {
                "id": vpc,
                "arn": known_after_deploy(f"arn of {vpc}"),
                "cidrBlock": known_after_deploy(f"CIDR of {vpc}"),
                "cidrBlockAssociations": [],
                "default": False,
                "dhcpOptionsId": known_after_deploy(f"DHCP options of {vpc}"),
                "enableDnsHostnames": True,
                "enableDnsSupport": True,
                "enableNetworkAddressUsageMetrics": False,
                "instanceTenancy": "default",
                "ipv6AssociationId": "",
                "ipv6CidrBlock": "",
                "mainRouteTableId": known_after_deploy(f"main route table of {vpc}"),
                "ownerId": known_after_deploy("AWS account id"),
                "region": self.region,
                "state": "available",
                "tags": {},
            }, []
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}, []
        if token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            registry = args.args.get("registryId") or known_after_deploy("AWS account id")
            endpoint = f"https://{registry}.dkr.ecr.{self.region}.amazonaws.com"
            return {
                "id": self.region,
                "region": self.region,
                "registryId": registry,
                "userName": "AWS",
                "password": known_after_deploy("ECR registry password"),
                "authorizationToken": known_after_deploy("ECR authorization token"),
                "expiresAt": known_after_deploy("ECR token expiry"),
                "proxyEndpoint": endpoint,
            }, []
        raise NotImplementedError(
            f"RecordingMocks has no answer for invoke {token}; add its full result shape"
        )


class RecordingMonitor(mocks.MockMonitor):
    """The mock monitor, recording each registration with its parent (the mocks themselves never see it)."""

    def __init__(self, recorder: RecordingMocks) -> None:
        super().__init__(recorder)
        self.recorder = recorder

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != STACK_TYPE:
            self.recorder.registrations.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    custom=bool(request.custom),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                    dependencies=tuple(request.dependencies),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                )
            )
        return response


class _LogRecorder(logging.Handler):
    def __init__(self, messages: list[str]) -> None:
        super().__init__()
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


def install_mocks(
    *, project: str, stack: str, region: str = "us-east-1", preview: bool = False
) -> RecordingMocks:
    """Point the Pulumi runtime at recording mocks (as an update by default, so every apply runs).
    What the program logs (`pulumi.log`) is kept in `recorder.logs`, not printed."""
    recorder = RecordingMocks(region=region)
    logger = logging.getLogger("llm-serving.render")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.handlers = [_LogRecorder(recorder.logs)]
    runtime_settings.ROOT.set(None)  # a fresh stack resource per run: no export leaks from a previous stack
    pulumi.runtime.set_mocks(
        recorder,
        project=project,
        stack=stack,
        preview=preview,
        monitor=RecordingMonitor(recorder),
        logger=logger,
    )
    return recorder
