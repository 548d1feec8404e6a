"""The deployment's outputs, as `cdk deploy --outputs-file FILE` writes them.

`npx cdk deploy --all --outputs-file cdk-outputs.json` writes one object per stack,
each mapping an output name to its value. The launcher and the client call
`load_outputs("cdk-outputs.json")` to learn bucket names, the role ARN, the image URI
and the endpoint name, so nobody copies an ARN by hand. The output names below are the
ones the stacks declare; this module imports nothing from CDK.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict

# Output names, shared by the stacks that declare them and by the reader.
DATA_BUCKET = "DataBucketName"
ARTIFACT_BUCKET = "ArtifactBucketName"
CAPTURE_BUCKET = "CaptureBucketName"
ACCESS_LOG_BUCKET = "AccessLogBucketName"
KEY_ARN = "KeyArn"
EXECUTION_ROLE_ARN = "ExecutionRoleArn"  # the training role (jobs)
SERVING_ROLE_ARN = "ServingRoleArn"  # endpoints
IMAGE_URI = "ImageUri"  # the CPU image
CUDA_IMAGE_URI = "CudaImageUri"  # the CUDA image, on stages that build it
MODEL_PACKAGE_GROUP = "ModelPackageGroupName"
PIPELINE_NAME = "PipelineName"
SUBNET_IDS = "SubnetIds"
SECURITY_GROUP_ID = "SecurityGroupId"
ENDPOINT_NAME = "EndpointName"
ASYNC_ENDPOINT_NAME = "AsyncEndpointName"
PROMOTION_STATE_MACHINE = "PromotionStateMachineArn"


class DeployOutputs(TypedDict):
    """What a deployment provides; the optional fields exist only when deployed."""

    data_bucket: str
    artifact_bucket: str
    capture_bucket: str
    access_log_bucket: str
    key_arn: str
    execution_role_arn: str
    image_uri: NotRequired[str]  # the CPU image, unless genkiln:images=cuda
    cuda_image_uri: NotRequired[str]  # with a GPU instance type or genkiln:images=both
    serving_role_arn: NotRequired[str]  # deployments before the roles were split lack it
    model_package_group: str
    pipeline_name: str
    subnet_ids: NotRequired[list[str]]  # only with genkiln:useVpc
    security_group_id: NotRequired[str]  # only with genkiln:useVpc
    endpoint_name: NotRequired[str]  # only with a serving stack
    async_endpoint_name: NotRequired[str]  # with genkiln:asyncEndpoint


# Outputs every deployment has (the data and training stacks).
REQUIRED = (DATA_BUCKET, ARTIFACT_BUCKET, CAPTURE_BUCKET, ACCESS_LOG_BUCKET, KEY_ARN,
            EXECUTION_ROLE_ARN, MODEL_PACKAGE_GROUP, PIPELINE_NAME)


class OutputsError(ValueError):
    """The outputs file is missing, malformed, or from a partial deployment."""


def load_outputs(path: str | Path, *, project: str = "genkiln", stage: str = "dev"
                 ) -> DeployOutputs:
    """Read `cdk deploy --outputs-file` output for one project and stage.

    Stacks are named `<project>-<stage>-<unit>`; only those are read, so one file can
    hold several stages without their values mixing.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise OutputsError(f"{path} not found: run `npx cdk deploy --all --outputs-file "
                           f"{path.name}` first") from err
    except json.JSONDecodeError as err:
        raise OutputsError(f"{path} is not JSON: {err}") from err
    if not isinstance(document, dict):
        raise OutputsError(f"{path} must hold a JSON object of stacks")

    prefix = f"{project}-{stage}-"
    merged: dict[str, str] = {}
    for stack_name, values in document.items():
        if stack_name.startswith(prefix) and isinstance(values, dict):
            merged.update({str(k): str(v) for k, v in values.items()})

    missing = sorted(name for name in REQUIRED if name not in merged)
    if IMAGE_URI not in merged and CUDA_IMAGE_URI not in merged:
        missing.append(IMAGE_URI)
    if missing:
        raise OutputsError(f"{path} has no {', '.join(missing)} for stacks {prefix}*: "
                           "deploy the data and training stacks of that stage")
    outputs = DeployOutputs(
        data_bucket=merged[DATA_BUCKET],
        artifact_bucket=merged[ARTIFACT_BUCKET],
        capture_bucket=merged[CAPTURE_BUCKET],
        access_log_bucket=merged[ACCESS_LOG_BUCKET],
        key_arn=merged[KEY_ARN],
        execution_role_arn=merged[EXECUTION_ROLE_ARN],
        model_package_group=merged[MODEL_PACKAGE_GROUP],
        pipeline_name=merged[PIPELINE_NAME],
    )
    for name, field in ((IMAGE_URI, "image_uri"), (CUDA_IMAGE_URI, "cuda_image_uri"),
                        (SERVING_ROLE_ARN, "serving_role_arn")):
        if name in merged:
            outputs[field] = merged[name]  # type: ignore[literal-required]
    if SUBNET_IDS in merged:
        outputs["subnet_ids"] = [s for s in merged[SUBNET_IDS].split(",") if s]
    if SECURITY_GROUP_ID in merged:
        outputs["security_group_id"] = merged[SECURITY_GROUP_ID]
    if ENDPOINT_NAME in merged:
        outputs["endpoint_name"] = merged[ENDPOINT_NAME]
    if ASYNC_ENDPOINT_NAME in merged:
        outputs["async_endpoint_name"] = merged[ASYNC_ENDPOINT_NAME]
    return outputs
