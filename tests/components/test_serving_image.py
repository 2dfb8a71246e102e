"""ServingImage under recording mocks: an immutable, scanned ECR repository with a lifecycle policy, the
image built for linux/amd64 under its content tag with secret registry credentials, run by digest; or a
prebuilt reference and nothing created."""

from __future__ import annotations

import json

import pytest

from infra.components.serving_image import ServingImage, ServingImageArgs
from infra.images import content_tag
from infra.mock_runtime import sync_await
from infra.render import REDACTED
from tests.components.support import Recorded, resolve, run

TAGS = {"project": "llm-serving", "stack": "test", "team": "ml"}
COMPONENT = "llm-serving:index:ServingImage"
REPOSITORY = "aws:ecr/repository:Repository"
LIFECYCLE = "aws:ecr/lifecyclePolicy:LifecyclePolicy"
IMAGE = "docker-build:index:Image"


@pytest.fixture(scope="module")
def built() -> tuple[Recorded, ServingImage]:
    holder: dict[str, ServingImage] = {}
    recorded = run(
        lambda: holder.setdefault("i", ServingImage("img", ServingImageArgs(keep_images=7, tags=TAGS)))
    )
    return recorded, holder["i"]


def test_children_are_exactly_the_repository_its_lifecycle_and_the_image(
    built: tuple[Recorded, ServingImage],
) -> None:
    recorded, _ = built
    assert sorted(recorded.names()) == sorted(
        [
            (COMPONENT, "img"),
            (REPOSITORY, "img-repository"),
            (LIFECYCLE, "img-lifecycle"),
            (IMAGE, "img-image"),
        ]
    )
    component = recorded.one(COMPONENT, "img")
    assert {r.name for r in recorded.children_of(component)} == {
        "img-repository",
        "img-lifecycle",
        "img-image",
    }


def test_repository_is_immutable_scanned_and_tagged(built: tuple[Recorded, ServingImage]) -> None:
    recorded, _ = built
    repository = recorded.inputs(REPOSITORY, "img-repository")
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["forceDelete"] is False
    assert TAGS.items() <= repository["tags"].items()


def test_lifecycle_keeps_the_last_images(built: tuple[Recorded, ServingImage]) -> None:
    recorded, _ = built
    lifecycle = recorded.inputs(LIFECYCLE, "img-lifecycle")
    assert lifecycle["repository"] == "<known after deploy: img-repository.name>"
    (rule,) = json.loads(lifecycle["policy"])["rules"]
    assert rule["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 7}
    assert rule["action"] == {"type": "expire"}


def test_image_is_built_for_amd64_under_its_content_tag_and_pushed(
    built: tuple[Recorded, ServingImage],
) -> None:
    recorded, image = built
    inputs = recorded.inputs(IMAGE, "img-image")
    assert inputs["platforms"] == ["linux/amd64"]
    assert inputs["push"] is True and inputs["buildOnPreview"] is False
    assert inputs["context"] == {"location": "."}
    assert inputs["dockerfile"] == {"location": "images/serving/Dockerfile"}
    tag = content_tag(build_settings=("linux/amd64",))
    assert image.tag == tag
    assert inputs["tags"] == [f"<known after deploy: img-repository.repositoryUrl>:{tag}"]
    assert not any(t.endswith(":latest") for t in inputs["tags"])


def test_registry_credentials_are_a_secret(built: tuple[Recorded, ServingImage]) -> None:
    recorded, _ = built
    assert recorded.inputs(IMAGE, "img-image")["registries"] == REDACTED
    raw = json.dumps(recorded.one(IMAGE, "img-image").inputs, default=str)
    assert "ECR registry password" in raw  # the mock's password reaches the provider, wrapped as a secret


def test_pods_run_the_image_by_digest(built: tuple[Recorded, ServingImage]) -> None:
    _, image = built
    assert resolve(image.image_ref) == (
        "<known after deploy: img-repository.repositoryUrl>@<known after deploy: img-image.digest>"
    )
    assert resolve(image.repository_url) == "<known after deploy: img-repository.repositoryUrl>"
    assert not sync_await(image.image_ref.is_secret())


def test_a_prebuilt_image_creates_nothing() -> None:
    holder: dict[str, ServingImage] = {}
    reference = "registry.example.com/llm/serving:v0.33.0-2"
    recorded = run(
        lambda: holder.setdefault("i", ServingImage("img", ServingImageArgs(prebuilt=reference, tags=TAGS)))
    )
    assert recorded.names() == [(COMPONENT, "img")]
    assert resolve(holder["i"].image_ref) == reference
    assert resolve(holder["i"].repository_url) is None
    assert holder["i"].tag is None


@pytest.mark.parametrize("bad", [{"keep_images": 0}, {"prebuilt": ""}])
def test_bad_args_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        ServingImageArgs(**bad)
