"""Context keys: parsed into types, checked, and every one documented in cdk.json."""

from __future__ import annotations

import pytest

import infra.settings as settings_module
from infra.settings import KEYS, Settings, SettingsError

from .conftest import cdk_json_context


def from_context(**values: object) -> Settings:
    context = {KEYS[k]: v for k, v in values.items()}
    return Settings.from_context(lambda key: context.get(key))


def test_defaults_need_no_context() -> None:
    settings = Settings.from_context(lambda key: None)
    assert settings == Settings()
    assert not settings.serving


def test_command_line_strings_are_parsed_into_types() -> None:
    # `npx cdk -c genkiln:useVpc=true -c genkiln:maxInstances=4` passes strings.
    settings = from_context(use_vpc="true", max_instances="4", register_if="val_fid<=12.5",
                            min_instances="2", capture_days="30")
    assert settings.use_vpc is True
    assert settings.max_instances == 4
    assert settings.register_if == "val_fid<=12.5" and settings.capture_days == 30


def test_naming_an_artifact_or_a_package_adds_serving() -> None:
    assert from_context(model_artifact="s3://b/models/x/model.tar.gz").serving
    assert from_context(
        model_package_arn="arn:aws:sagemaker:eu-west-1:1:model-package/g/1").serving


@pytest.mark.parametrize(("values", "key"), [
    ({"register_if": "val_loss is small"}, "genkiln:registerIf"),
    ({"images": "rocm"}, "genkiln:images"),
    ({"capture_days": "0"}, "genkiln:captureDays"),
    ({"use_vpc": "maybe"}, "genkiln:useVpc"),
    ({"max_instances": "two"}, "genkiln:maxInstances"),
    ({"max_instances": 1.5}, "genkiln:maxInstances"),
    ({"endpoint_kind": "batch"}, "genkiln:endpointKind"),
    ({"min_instances": 0}, "genkiln:minInstances"),  # real-time cannot scale to zero
    ({"min_instances": 3, "max_instances": 2}, "genkiln:maxInstances"),
    ({"instance_type": "m5.large"}, "genkiln:instanceType"),
    ({"model_artifact": "s3://b/models/model.pt"}, "genkiln:modelArtifact"),
    ({"model_artifact": "s3://b/m.tar.gz",
      "model_package_arn": "arn:aws:sagemaker:r:1:model-package/g/1"}, "genkiln:modelArtifact"),
    ({"startup_health_check_seconds": 10}, "genkiln:startupHealthCheckSeconds"),
    ({"serverless_memory_mb": 1000}, "genkiln:serverlessMemoryMb"),
    ({"project": "Genkiln!"}, "genkiln:project"),
])
def test_bad_values_are_refused_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(SettingsError, match=key):
        from_context(**values)


def test_asynchronous_endpoints_may_scale_to_zero() -> None:
    assert from_context(endpoint_kind="async", min_instances=0).min_instances == 0


def test_cdk_json_sets_every_key_and_no_unknown_one() -> None:
    ours = {k for k in cdk_json_context() if k.startswith("genkiln:")}
    assert ours == set(KEYS.values())


def test_cdk_json_defaults_are_the_documented_defaults() -> None:
    context = cdk_json_context()
    assert Settings.from_context(lambda key: context.get(key)) == Settings()


def test_every_key_is_documented() -> None:
    doc = settings_module.__doc__ or ""
    undocumented = [key for key in KEYS.values() if f"`{key}`" not in doc]
    assert not undocumented


@pytest.mark.parametrize(("values", "images"), [
    ({}, ("cpu",)),
    ({"training_instance_type": "ml.g5.xlarge"}, ("cpu", "cuda")),
    ({"instance_type": "ml.g4dn.xlarge"}, ("cpu", "cuda")),
    ({"instance_type": "ml.g4dn.xlarge", "endpoint_kind": "serverless"}, ("cpu",)),
    ({"images": "both"}, ("cpu", "cuda")),
    ({"images": "cuda"}, ("cuda",)),
])
def test_the_images_built_follow_the_instance_types(values: dict[str, str],
                                                     images: tuple[str, ...]) -> None:
    assert from_context(**values).image_variants() == images
