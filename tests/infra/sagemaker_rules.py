"""SageMaker's documented rules, as checks of request bodies: moto accepts what AWS refuses.

Each rule names the documentation it comes from and checks one kind of request (by its
API operation). The same checks run over every synthesized variant of the CDK app (its
CloudFormation properties have the API's names) and over every request the launcher and
the deployer send (tests/infra/test_sagemaker_rules.py), so a template or a request that
AWS would refuse fails here, offline.

A value that is a CloudFormation intrinsic (a dict) is unknown at synth time and is not
judged, except where the rule is about its presence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.instances import LOCAL_STORAGE_GB, family_of, has_local_storage, is_gpu

API = "https://docs.aws.amazon.com/sagemaker/latest/APIReference/"
GUIDE = "https://docs.aws.amazon.com/sagemaker/latest/dg/"

Request = Mapping[str, Any]


@dataclass(frozen=True)
class Rule:
    name: str
    source: str  # the documentation page the rule comes from
    operations: tuple[str, ...]  # the API operations whose requests it checks
    check: Callable[[Request], Iterable[str]]  # the violations in one request


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _volume_key(resources: Request | None) -> Iterable[str]:
    if not resources:
        return
    kind = _text(resources.get("InstanceType"))
    if kind and has_local_storage(kind) and resources.get("VolumeKmsKeyId"):
        yield f"{kind} has local NVMe storage: VolumeKmsKeyId must not be set"


def _volume_size(resources: Request | None) -> Iterable[str]:
    if not resources:
        return
    kind, size = _text(resources.get("InstanceType")), resources.get("VolumeSizeInGB")
    if kind and has_local_storage(kind) and isinstance(size, int) \
            and size > LOCAL_STORAGE_GB[family_of(kind)]:
        yield (f"{kind}: VolumeSizeInGB {size} exceeds its local storage "
               f"({LOCAL_STORAGE_GB[family_of(kind)]} GB)")


def _resources(request: Request) -> list[Request]:
    """The instance resources a job request names (training, processing, tuning)."""
    found = [request.get("ResourceConfig"),
             (request.get("ProcessingResources") or {}).get("ClusterConfig"),
             (request.get("TrainingJobDefinition") or {}).get("ResourceConfig")]
    return [r for r in found if isinstance(r, Mapping)]


def _job_volume_keys(request: Request) -> Iterable[str]:
    for resources in _resources(request):
        yield from _volume_key(resources)


def _job_volume_sizes(request: Request) -> Iterable[str]:
    for resources in _resources(request):
        yield from _volume_size(resources)


def _variants(request: Request) -> list[Request]:
    return [v for v in request.get("ProductionVariants") or [] if isinstance(v, Mapping)]


def _endpoint_volume_key(request: Request) -> Iterable[str]:
    local = [v["InstanceType"] for v in _variants(request)
             if isinstance(v.get("InstanceType"), str) and has_local_storage(v["InstanceType"])]
    if local and request.get("KmsKeyId"):
        yield f"{', '.join(local)} has local NVMe storage: KmsKeyId must not be set"
    if any("ServerlessConfig" in v for v in _variants(request)) and request.get("KmsKeyId"):
        yield "a serverless endpoint has no volume: KmsKeyId must not be set"


def _serverless_config(request: Request) -> Iterable[str]:
    serverless = [v for v in _variants(request) if "ServerlessConfig" in v]
    if not serverless:
        return
    if request.get("DataCaptureConfig"):
        yield "serverless endpoints do not support data capture"
    if len(_variants(request)) > 1:
        yield "serverless endpoints take one production variant"
    for variant in serverless:
        config = variant["ServerlessConfig"]
        memory, concurrency = config.get("MemorySizeInMB"), config.get("MaxConcurrency")
        if isinstance(memory, int) and memory not in range(1024, 6145, 1024):
            yield f"MemorySizeInMB {memory}: 1024 to 6144 in 1024 MB steps"
        if isinstance(concurrency, int) and not 1 <= concurrency <= 200:
            yield f"MaxConcurrency {concurrency}: 1 to 200"
        if "InstanceType" in variant:
            yield "a serverless variant takes no InstanceType"


def _serverless_model(request: Request) -> Iterable[str]:
    """A model request marked `_serverless` (it is served by a serverless variant)."""
    if not request.get("_serverless"):
        return
    if request.get("VpcConfig"):
        yield "serverless endpoints do not support a VPC configuration"
    if request.get("EnableNetworkIsolation") is True:
        yield "serverless endpoints do not support network isolation"


def _model_data(request: Request) -> Iterable[str]:
    containers = [request.get("PrimaryContainer"), *(request.get("Containers") or [])]
    for container in containers:
        url = _text((container or {}).get("ModelDataUrl"))
        if url and url.startswith("s3://") and not url.endswith(".tar.gz"):
            yield f"ModelDataUrl {url} must be a .tar.gz (SageMaker unpacks it)"


def _hyperparameters(request: Request) -> Iterable[str]:
    values = request.get("HyperParameters") or (
        (request.get("TrainingJobDefinition") or {}).get("StaticHyperParameters")) or {}
    if len(values) > 100:
        yield f"{len(values)} hyperparameters: at most 100"
    for key, value in values.items():
        if isinstance(value, Mapping):  # a pipeline parameter, resolved at run time
            continue
        if not isinstance(value, str):
            yield f"hyperparameter {key}: the value must be a string, not {type(value)}"
        elif len(value) > 2500 or len(key) > 256:
            yield f"hyperparameter {key}: keys take 256 characters, values 2,500"


_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_NAMES = ("TrainingJobName", "ProcessingJobName", "HyperParameterTuningJobName",
          "ModelName", "EndpointConfigName", "EndpointName")


def _names(request: Request) -> Iterable[str]:
    for field in _NAMES:
        name = _text(request.get(field))
        if name is not None and not _NAME.match(name):
            yield f"{field} {name!r}: 1-63 letters, digits and hyphens"
    tuning = _text(request.get("HyperParameterTuningJobName"))
    if tuning is not None and len(tuning) > 32:
        yield f"HyperParameterTuningJobName {tuning!r}: at most 32 characters"


def _spot(request: Request) -> Iterable[str]:
    definition = request.get("TrainingJobDefinition") or request
    if not definition.get("EnableManagedSpotTraining"):
        return
    stopping = definition.get("StoppingCondition") or {}
    wait, run = stopping.get("MaxWaitTimeInSeconds"), stopping.get("MaxRuntimeInSeconds")
    if not isinstance(wait, int):
        yield "managed spot training needs StoppingCondition.MaxWaitTimeInSeconds"
    elif isinstance(run, int) and wait < run:
        yield f"MaxWaitTimeInSeconds {wait} is less than MaxRuntimeInSeconds {run}"


def _variant_timeouts(request: Request) -> Iterable[str]:
    for variant in _variants(request):
        for field in ("ContainerStartupHealthCheckTimeoutInSeconds",
                      "ModelDataDownloadTimeoutInSeconds"):
            value = variant.get(field)
            if isinstance(value, int) and not 60 <= value <= 3600:
                yield f"{field} {value}: 60 to 3600 seconds"
        count = variant.get("InitialInstanceCount")
        if "ServerlessConfig" not in variant and isinstance(count, int) and count < 1:
            yield f"InitialInstanceCount {count}: at least 1"


def _gpu_image(request: Request) -> Iterable[str]:
    """A request marked with `_images` (variant -> what names its image: the URI, or the
    asset's tag in a template) runs the CUDA build on GPU instance types: genkiln's own
    rule (the CPU build cannot use the GPU)."""
    images = request.get("_images")
    if not images or "cuda" not in images:
        return
    pairs: list[tuple[Any, Any]] = []
    for resources in _resources(request):
        spec = request.get("AlgorithmSpecification") or request.get("AppSpecification") or (
            (request.get("TrainingJobDefinition") or {}).get("AlgorithmSpecification")) or {}
        pairs.append((resources.get("InstanceType"),
                      spec.get("TrainingImage") or spec.get("ImageUri")))
    if "_instance_type" in request:
        pairs.append((request["_instance_type"],
                      (request.get("PrimaryContainer") or {}).get("Image")))
    for kind, image in pairs:
        if isinstance(kind, str) and is_gpu(kind) and images["cuda"] not in repr(image):
            yield f"{kind} has a GPU: it must run the CUDA image, not {image}"


def _retains_capacity(request: Request) -> Iterable[str]:
    """An endpoint (marked `_autoscaled`) that autoscaling targets keeps its current
    capacity on update."""
    if request.get("_autoscaled") and request.get("RetainAllVariantProperties") is not True:
        yield "an autoscaled endpoint must update with RetainAllVariantProperties"


def _checkpoints_per_run(request: Request) -> Iterable[str]:
    """A pipeline's training step (marked `_pipeline`) checkpoints under a prefix of its
    own execution: genkiln's rule, or a run resumes from another's state."""
    if not request.get("_pipeline") or "CheckpointConfig" not in request:
        return
    if "Execution.PipelineExecutionId" not in repr(request["CheckpointConfig"]["S3Uri"]):
        yield "the checkpoint prefix is shared by every execution of the pipeline"


JOBS = ("CreateTrainingJob", "CreateProcessingJob", "CreateHyperParameterTuningJob")
RULES = [
    Rule("no-volume-key-on-local-storage", f"{API}API_ResourceConfig.html", JOBS,
         _job_volume_keys),
    Rule("no-endpoint-key-on-local-storage", f"{API}API_CreateEndpointConfig.html",
         ("CreateEndpointConfig",), _endpoint_volume_key),
    Rule("volume-within-local-storage", f"{API}API_ResourceConfig.html", JOBS,
         _job_volume_sizes),
    Rule("serverless-endpoint-config", f"{GUIDE}serverless-endpoints.html",
         ("CreateEndpointConfig",), _serverless_config),
    Rule("serverless-model", f"{GUIDE}serverless-endpoints.html", ("CreateModel",),
         _serverless_model),
    Rule("model-data-is-a-tarball", f"{API}API_ContainerDefinition.html",
         ("CreateModel", "CreateModelPackage"), _model_data),
    Rule("hyperparameters-are-strings", f"{API}API_CreateTrainingJob.html",
         ("CreateTrainingJob", "CreateHyperParameterTuningJob"), _hyperparameters),
    Rule("resource-names", f"{API}API_CreateTrainingJob.html",
         (*JOBS, "CreateModel", "CreateEndpointConfig", "CreateEndpoint"), _names),
    Rule("spot-waits-at-least-the-run", f"{API}API_StoppingCondition.html",
         ("CreateTrainingJob", "CreateHyperParameterTuningJob"), _spot),
    Rule("variant-timeouts-and-counts", f"{API}API_ProductionVariant.html",
         ("CreateEndpointConfig",), _variant_timeouts),
    Rule("gpu-runs-the-cuda-image", "Dockerfile (TORCH_VARIANT)",
         (*JOBS, "CreateModel"), _gpu_image),
    Rule("autoscaled-updates-retain-capacity", f"{GUIDE}endpoint-scaling-update.html",
         ("CreateEndpoint",), _retains_capacity),
    Rule("checkpoints-per-pipeline-run", f"{GUIDE}model-managed-spot-training.html",
         ("CreateTrainingJob",), _checkpoints_per_run),
]


def violations(operation: str, request: Request) -> list[str]:
    """Every rule's complaint about ``request`` (an ``operation`` body), `rule: why`."""
    return [f"{rule.name} ({rule.source}): {why}" for rule in RULES
            if operation in rule.operations for why in rule.check(request)]
