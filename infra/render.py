"""`python -m infra render --stack NAME --out DIR`: what a stack would create, offline, without credentials.

Runs the real program (`__main__.py`) for `stacks/Pulumi.<stack>.yaml` under Pulumi's mock runtime, after
applying the `Pulumi.yaml` config schema to the stack file the way the Pulumi CLI would. A recording mock
monitor captures every registered resource (type, name, parent, inputs). Then:

- every Kubernetes object becomes one YAML file under `DIR/kubernetes/<component>/`;
- `DIR/resources.json` lists every resource with its inputs, secrets redacted; values a real deployment
  computes (ARNs, IDs, endpoints, autonamed names) appear as `<known after deploy: ...>` placeholders;
- `DIR/summary.md` (also printed) gives the plan, the resource counts and the estimated $/h.

The same `RecordingMocks` serve the component tests, so tests and render see identical resources.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import runpy
import typing
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from pulumi.runtime import mocks, rpc
from pulumi.runtime import settings as runtime_settings

from infra.config import PROJECT, apply_project_config
from infra.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
STACKS_DIR = REPO_ROOT / "stacks"
PROGRAM = REPO_ROOT / "__main__.py"
SECRET_SIG = rpc._special_sig_key  # the wire marker of a secret value
SECRET_VALUE = rpc._special_secret_sig
REDACTED = "[secret]"
STACK_TYPE = "pulumi:pulumi:Stack"


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


def install_mocks(*, stack: str, region: str = "us-east-1", preview: bool = False) -> RecordingMocks:
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
        project=PROJECT,
        stack=stack,
        preview=preview,
        monitor=RecordingMonitor(recorder),
        logger=logger,
    )
    return recorder


# ---------------------------------------------------------------------------------------------------------
# Redaction and manifests


def redact(value: Any) -> Any:
    """Replace every secret value (as it travels on the wire) with a marker, keeping the keys of a secret
    map (a Secret's stringData stays a map); unknowns become placeholders; whole floats become ints again
    (numbers travel as doubles)."""
    if isinstance(value, Mapping):
        if value.get(SECRET_SIG) == SECRET_VALUE:
            inner = value.get("value")
            if isinstance(inner, Mapping):
                return {key: REDACTED for key in inner}
            return REDACTED
        return {key: redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value == rpc.UNKNOWN:
        return known_after_deploy("a value")
    return value


def is_kubernetes_object(registration: Registration) -> bool:
    return (
        registration.custom
        and registration.type.startswith("kubernetes:")
        and not registration.type.startswith("kubernetes:helm.sh/")
        and "apiVersion" in registration.inputs
        and "kind" in registration.inputs
    )


def manifest(registration: Registration) -> dict[str, Any]:
    """The Kubernetes object a `kubernetes:*` resource applies, as a plain manifest."""
    inputs = redact(registration.inputs)
    ordered = {key: inputs[key] for key in ("apiVersion", "kind", "metadata") if key in inputs}
    ordered.update({key: value for key, value in inputs.items() if key not in ordered})
    return ordered


@dataclass(frozen=True)
class Rendered:
    registrations: list[Registration]
    outputs: dict[str, Any]
    logs: tuple[str, ...] = ()

    def by_urn(self) -> dict[str, Registration]:
        return {r.urn: r for r in self.registrations}

    def component_of(self, registration: Registration) -> Registration | None:
        """The nearest ancestor component of a resource (None for resources at the top of the stack)."""
        urns = self.by_urn()
        parent = urns.get(registration.parent or "")
        while parent is not None and parent.custom:
            parent = urns.get(parent.parent or "")
        return parent

    def kubernetes_objects(self) -> list[tuple[Registration, dict[str, Any]]]:
        return [(r, manifest(r)) for r in self.registrations if is_kubernetes_object(r)]

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == type_]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-")


def _component_dir(rendered: Rendered, registration: Registration) -> str:
    component = rendered.component_of(registration)
    if component is None:
        return "stack"
    return _slug(f"{component.type.rsplit(':', 1)[-1]}-{component.name}")


# ---------------------------------------------------------------------------------------------------------
# Running the program


def stack_file(stack: str) -> Path:
    path = STACKS_DIR / f"Pulumi.{stack}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack) or not path.is_file():
        known = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in STACKS_DIR.glob("Pulumi.*.yaml")
        )
        raise UserError(
            f"unknown stack {stack!r}; stacks in {STACKS_DIR.name}/: {', '.join(known) or 'none'}"
        )
    return path


def load_stack_config(stack: str) -> tuple[dict[str, str], set[str]]:
    """The stack file's config with the project schema applied, as the program would receive it."""
    path = stack_file(stack)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path.name} is not valid YAML: {error}".replace("\n", " ")) from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise UserError(f"{path.name} must be a mapping with a config: section")
    return apply_project_config(document.get("config") or {}, stack=stack)


def run_program(stack: str, *, preview: bool = False) -> Rendered:
    """Run `__main__.py` for the stack under recording mocks; UserErrors surface as themselves.
    Render runs it as an update (every apply runs); `preview=True` runs it as `pulumi preview` would."""
    config, secret_keys = load_stack_config(stack)
    region = config.get(f"{PROJECT}:region", "us-east-1")
    recorder = install_mocks(stack=stack, region=region, preview=preview)
    pulumi.runtime.set_all_config(config, list(secret_keys))
    outputs: dict[str, Any] = {}

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__pulumi_program__")

    try:
        from pulumi.runtime.stack import run_pulumi_func
        from pulumi.runtime.sync_await import _sync_await

        _sync_await(run_pulumi_func(program))
        outputs = _resolve_exports()
    except pulumi.RunError as error:
        cause = error.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise
    finally:
        pulumi.runtime.set_all_config({}, [])
    return Rendered(registrations=list(recorder.registrations), outputs=outputs, logs=tuple(recorder.logs))


def _resolve_exports() -> dict[str, Any]:
    from pulumi.runtime.settings import get_root_resource
    from pulumi.runtime.sync_await import _sync_await

    root = get_root_resource()
    exported = getattr(root, "outputs", {}) or {}
    resolved: dict[str, Any] = {}
    for key, value in exported.items():
        output = pulumi.Output.from_input(value)
        secret = _sync_await(output.is_secret())
        resolved[key] = REDACTED if secret else _sync_await(output.future(with_unknowns=True))
    return resolved


# ---------------------------------------------------------------------------------------------------------
# Writing


def resource_entries(rendered: Rendered) -> list[dict[str, Any]]:
    urns = rendered.by_urn()
    entries = []
    for registration in rendered.registrations:
        parent = urns.get(registration.parent or "")
        entries.append(
            {
                "type": registration.type,
                "name": registration.name,
                "parent": f"{parent.type}::{parent.name}" if parent else None,
                "component": not registration.custom,
                "inputs": redact(registration.inputs),
            }
        )
    return entries


def summary(stack: str, rendered: Rendered) -> str:
    plan = rendered.outputs.get("plan") or {}
    counts = Counter(r.type for r in rendered.registrations if r.custom)
    kubernetes = len(rendered.kubernetes_objects())
    lines = [f"# render of stack {stack}", ""]
    revisions = plan.get("revisions") or {}
    if revisions:
        lines += [
            "| revision | model | weight | instance type | GPUs per replica | TP / PP | max_model_len | "
            "KV cache tokens | replicas | $/h per replica |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, rev in revisions.items():
            cost = rev.get("cost_per_hour_usd")
            replicas = rev.get("replicas") or {}
            lines.append(
                f"| {name} | {rev.get('model')}@{rev.get('model_revision')} | {rev.get('weight')} | "
                f"{rev.get('instance_type')} ({rev.get('capacity_type')}) | {rev.get('gpus_per_replica')} x "
                f"{(rev.get('gpu') or {}).get('name')} | {rev.get('tensor_parallel_size')} / "
                f"{rev.get('pipeline_parallel_size')} | {rev.get('max_model_len')} | {rev.get('kv_cache_tokens')} | "
                f"{replicas.get('min')}-{replicas.get('max')} | {'unknown' if cost is None else f'{cost:.2f}'} |"
            )
        total = plan.get("cost_per_hour_usd_at_max_replicas")
        lines += ["", f"Estimated $/h at max replicas: {'unknown' if total is None else f'{total:.2f}'}", ""]
    lines += ["| resource type | count |", "|---|---|"]
    lines += [f"| {type_} | {count} |" for type_, count in sorted(counts.items())]
    lines += [
        f"| **total** | **{sum(counts.values())}** ({kubernetes} Kubernetes objects) |",
        "",
        "Estimated cost covers the GPU nodes only (catalog list prices), not the EKS control plane, "
        "system nodes, NAT gateway, load balancer or traffic.",
    ]
    return "\n".join(lines) + "\n"


def write(stack: str, rendered: Rendered, out: Path) -> list[Path]:
    """Write manifests, resources.json and summary.md under `out`; return the manifest paths."""
    out.mkdir(parents=True, exist_ok=True)
    kubernetes_dir = out / "kubernetes"
    written: list[Path] = []
    for registration, document in rendered.kubernetes_objects():
        metadata = document.get("metadata") or {}
        name = metadata.get("name") or registration.name
        namespace = metadata.get("namespace")
        file_name = _slug(f"{document['kind']}-{namespace + '-' if namespace else ''}{name}") + ".yaml"
        path = kubernetes_dir / _component_dir(rendered, registration) / file_name
        if path in written:
            raise RuntimeError(f"two Kubernetes objects render to {path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        written.append(path)
    (out / "resources.json").write_text(
        json.dumps(
            {"stack": stack, "resources": resource_entries(rendered), "outputs": rendered.outputs},
            indent=2,
            default=str,
        )
        + "\n"
    )
    (out / "summary.md").write_text(summary(stack, rendered))
    return written


def render(stack: str, out: Path) -> Rendered:
    """Run the program for `stack` and write everything under `out`."""
    rendered = run_program(stack)
    write(stack, rendered, out)
    return rendered
