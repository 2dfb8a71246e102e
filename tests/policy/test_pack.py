"""The policy pack as `pulumi preview --policy-pack policy/` runs it: `policy/__main__.py` started in the
pack's own virtualenv serves CrossGuard's Analyzer on 127.0.0.1, and the test sends it what the engine would
(the dev stack's resources as the recording mocks record them) over gRPC."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from policy import rules
from tests.conftest import stop_process
from tests.policy.support import REPO, mutated, recorded

POLICY_PYTHON = REPO / "policy" / "venv" / "bin" / "python"
MANDATORY = analyzer_pb2.EnforcementLevel.Value("MANDATORY")


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    if not POLICY_PYTHON.exists():
        pytest.skip(
            f"needs the policy pack's virtualenv {POLICY_PYTHON.parent.parent}: run `make policy-venv`"
        )
    process = subprocess.Popen(
        [str(POLICY_PYTHON), "__main__.py"],
        cwd=REPO / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline().strip() or 0)  # the pack prints its port, as the CLI expects
        if not port:
            pytest.fail(f"the policy pack did not start: {process.stderr.read() if process.stderr else ''}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        stop_process(process)


def analyze(
    stub: analyzer_pb2_grpc.AnalyzerStub, resources: list[rules.Resource]
) -> list[analyzer_pb2.AnalyzeDiagnostic]:
    request = analyzer_pb2.AnalyzeStackRequest()
    for resource in resources:
        properties = struct_pb2.Struct()
        properties.update(dict(resource.props))
        request.resources.append(
            analyzer_pb2.AnalyzerResource(
                type=resource.type,
                properties=properties,
                urn=resource.urn,
                name=resource.name,
                dependencies=sorted(resource.dependencies),
            )
        )
    return list(stub.AnalyzeStack(request, timeout=60).diagnostics)


def test_the_pack_names_every_rule_as_mandatory(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=20)
    assert info.name == "llm-serving-guardrails"
    assert {p.name: p.enforcementLevel for p in info.policies} == dict.fromkeys(rules.RULES, MANDATORY)


def test_the_dev_stack_passes_the_pack(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    resources, _ = recorded("dev")
    assert list(analyze(analyzer, list(resources))) == []


def test_a_broken_dev_stack_fails_the_pack(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    resources, _ = recorded("dev")
    broken = mutated(
        resources,
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        lambda p: p.update(restrictPublicBuckets=False),
    )
    broken = mutated(
        tuple(broken),
        "kubernetes:batch/v1:Job",
        lambda p: p["spec"]["template"]["spec"]["containers"][0].update(image="vllm/vllm-openai:latest"),
    )
    found = {d.policyName for d in analyze(analyzer, broken)}
    assert found == {
        "s3-buckets-private-encrypted-tls-only",
        "no-floating-image-tags",
    }


def test_values_unknown_at_preview_are_not_violations(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    """The engine sends a value it cannot know yet (the digest of an image built in this update, a bucket
    ARN inside a policy document) as an unknown; the rules skip it instead of failing or giving up."""
    resources, _ = recorded("dev")

    def unknown_image(props: dict) -> None:
        container = props["spec"]["template"]["spec"]["containers"][0]
        container.update(image=rpc.UNKNOWN, args=[*container["args"], rpc.UNKNOWN])

    broken = mutated(resources, "kubernetes:batch/v1:Job", unknown_image)
    broken = mutated(
        tuple(broken), "aws:s3/bucketPolicy:BucketPolicy", lambda p: p.update(policy=rpc.UNKNOWN)
    )
    assert list(analyze(analyzer, broken)) == []
