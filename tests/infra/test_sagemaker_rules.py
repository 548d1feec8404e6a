"""SageMaker's documented rules (tests/infra/sagemaker_rules.py) over everything genkiln
would send AWS: every synthesized variant of the CDK app, and every request the launcher
and the deployer make (recorded against moto, which accepts what AWS refuses). Each rule
is also shown to fire on a request AWS refuses, so none of them can pass by accident."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infra import outputs as names
from tests.infra.conftest import VARIANTS, Assembly
from tests.infra.sagemaker_rules import RULES, violations

Request = dict[str, Any]


# --- what the templates ask for ----------------------------------------------------------
def _pipeline_steps(body: Any) -> list[Request]:
    """The pipeline's steps, with its CloudFormation tokens put back where they were."""
    parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
    tokens: dict[str, Any] = {}
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
        else:
            marker = f"@@token{len(tokens)}@@"
            tokens[marker] = part
            text += marker

    def restore(value: Any) -> Any:
        if isinstance(value, str):
            return tokens.get(value, value)
        if isinstance(value, list):
            return [restore(v) for v in value]
        if isinstance(value, dict):
            return {k: restore(v) for k, v in value.items()}
        return value

    steps: list[Request] = []

    def walk(level: list[Request]) -> None:
        for step in level:
            steps.append(step)
            walk(step["Arguments"].get("IfSteps", []))
            walk(step["Arguments"].get("ElseSteps", []))

    walk(restore(json.loads(text))["Steps"])
    return steps


def state_machine_tasks(definition: Any) -> list[tuple[str, Request]]:
    """(operation, parameters) of each AWS SDK task calling SageMaker in a state machine
    (a `.$` parameter is chosen at run time, and checked as unknown)."""
    parts = definition["Fn::Join"][1] if isinstance(definition, dict) else [definition]
    text = "".join(p if isinstance(p, str) else "TOKEN" for p in parts)
    found = []
    for state in json.loads(text)["States"].values():
        resource = state.get("Resource", "")
        if resource.startswith("arn:aws:states:::aws-sdk:sagemaker:"):
            action = resource.rsplit(":", 1)[1]
            found.append((action[0].upper() + action[1:], {
                k: v for k, v in state.get("Parameters", {}).items() if not k.endswith(".$")}))
    return found


def image_tags(assembly: Assembly) -> dict[str, str]:
    """Image variant -> the asset tag its URIs end with."""
    path = assembly.outdir / f"{assembly.stack_name('training')}.assets.json"
    return {a["source"].get("dockerBuildArgs", {}).get("TORCH_VARIANT"): tag
            for tag, a in json.loads(path.read_text())["dockerImages"].items()}


def template_requests(assembly: Assembly) -> list[tuple[str, Request]]:
    """(API operation, request body) for each SageMaker resource of every stack, marked
    with what the rules need to know that the body itself does not say."""
    images = image_tags(assembly)
    requests: list[tuple[str, Request]] = []
    for template in assembly.stacks.values():
        resources = template["Resources"]
        by_type: dict[str, dict[str, Request]] = {}
        for logical_id, resource in resources.items():
            by_type.setdefault(resource["Type"], {})[logical_id] = resource.get("Properties", {})
        scaled = {json.dumps(t["ResourceId"]) for t in by_type.get(
            "AWS::ApplicationAutoScaling::ScalableTarget", {}).values()}
        for config in by_type.get("AWS::SageMaker::EndpointConfig", {}).values():
            requests.append(("CreateEndpointConfig", config))
        for model_id, model in by_type.get("AWS::SageMaker::Model", {}).items():
            served = [v for c in by_type.get("AWS::SageMaker::EndpointConfig", {}).values()
                      for v in c["ProductionVariants"]
                      if v["ModelName"] == {"Fn::GetAtt": [model_id, "ModelName"]}]
            requests.append(("CreateModel", {
                **model, "_images": images,
                "_serverless": any("ServerlessConfig" in v for v in served),
                **({"_instance_type": served[0]["InstanceType"]}
                   if served and "InstanceType" in served[0] else {})}))
        for endpoint in by_type.get("AWS::SageMaker::Endpoint", {}).values():
            name = endpoint["EndpointName"]
            requests.append(("CreateEndpoint", {**endpoint, "_autoscaled": any(
                name in resource_id for resource_id in scaled)}))
        for machine in by_type.get("AWS::StepFunctions::StateMachine", {}).values():
            requests += state_machine_tasks(machine["DefinitionString"])
        for pipeline in by_type.get("AWS::SageMaker::Pipeline", {}).values():
            for step in _pipeline_steps(pipeline["PipelineDefinition"]["PipelineDefinitionBody"]):
                operation = {"Training": "CreateTrainingJob",
                             "Processing": "CreateProcessingJob",
                             "RegisterModel": "CreateModelPackage"}.get(step["Type"])
                if operation == "CreateModelPackage":
                    requests.append((operation, step["Arguments"]["InferenceSpecification"]))
                elif operation:
                    requests.append((operation, {**step["Arguments"], "_pipeline": True,
                                                 "_images": images}))
    return requests


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_template_keeps_sagemakers_rules(assemblies: dict[str, Assembly],
                                               variant: str) -> None:
    requests = template_requests(assemblies[variant])
    operations = {operation for operation, _ in requests}
    assert {"CreateTrainingJob", "CreateProcessingJob"} <= operations
    found = [(operation, why) for operation, request in requests
             for why in violations(operation, request)]
    assert not found, "\n".join(f"{op}: {why}" for op, why in found)


# --- what the launcher and the deployer send ---------------------------------------------
pytest.importorskip("moto")
import tests.unit.test_launch as launch_tests  # noqa: E402
from tests.unit.test_launch import ARTIFACTS, DATA, KMS, REGION, ROLE  # noqa: E402

# The launcher tests' fixtures: moto with the stack's role and buckets (recording every
# request boto3 sends), a text folder, a model artifact.
aws, corpus, artifact = launch_tests.aws, launch_tests.corpus, launch_tests.artifact

CPU_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:cpu"
CUDA_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdk-assets:cuda"
SERVING_ROLE = "arn:aws:iam::123456789012:role/genkiln-serving"
CAPTURE = "genkiln-capture"


@pytest.fixture
def outputs_file(tmp_path: Path) -> Path:
    """`cdk deploy --outputs-file` of a stage that builds both images."""
    path = tmp_path / "cdk-outputs.json"
    path.write_text(json.dumps({
        "genkiln-dev-data": {names.DATA_BUCKET: DATA, names.ARTIFACT_BUCKET: ARTIFACTS,
                             names.CAPTURE_BUCKET: CAPTURE, names.ACCESS_LOG_BUCKET: "logs",
                             names.KEY_ARN: KMS},
        "genkiln-dev-training": {names.EXECUTION_ROLE_ARN: ROLE,
                                 names.SERVING_ROLE_ARN: SERVING_ROLE,
                                 names.IMAGE_URI: CPU_IMAGE, names.CUDA_IMAGE_URI: CUDA_IMAGE,
                                 names.MODEL_PACKAGE_GROUP: "genkiln-dev-models",
                                 names.PIPELINE_NAME: "genkiln-dev-train"}}))
    return path


def sent_requests(sent: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, Request]]:
    marked = []
    instance_types = [v.get("InstanceType") for op, r in sent if op == "CreateEndpointConfig"
                      for v in r["ProductionVariants"]]
    for operation, request in sent:
        extra: Request = {"_images": {"cpu": CPU_IMAGE, "cuda": CUDA_IMAGE}}
        if operation == "CreateModel" and instance_types:
            if instance_types[0] is None:
                extra["_serverless"] = True
            else:
                extra["_instance_type"] = instance_types[0]
        marked.append((operation, {**request, **extra}))
    return marked


LAUNCHES = {
    "cpu training": ["train", "--instance-type", "ml.m5.xlarge", "--no-wait"],
    "gpu training": ["train", "--instance-type", "ml.g5.xlarge", "--no-wait"],
    "spot gpu training": ["train", "--instance-type", "ml.p4d.24xlarge", "--spot",
                          "--max-run", "3600", "--no-wait"],
    "gpu tuning": ["train", "--instance-type", "ml.g4dn.xlarge", "--tune", "4"],
    "cpu endpoint": ["deploy", "--instance-type", "ml.m5.large", "--no-wait"],
    # (moto's list of endpoint instance types ends at g4dn: AWS has g5 and later too.)
    "gpu endpoint": ["deploy", "--instance-type", "ml.g4dn.xlarge", "--no-wait"],
    "serverless endpoint": ["deploy", "--serverless", "2048", "--no-wait"],
    "async endpoint": ["deploy", "--instance-type", "ml.g4dn.2xlarge", "--async", "--no-wait"],
}


@pytest.mark.parametrize("launch", sorted(LAUNCHES))
def test_every_launch_and_deploy_request_keeps_sagemakers_rules(
        launch: str, aws: Any, corpus: Path, artifact: Path, outputs_file: Path) -> None:
    import boto3

    from genkiln.cli import main
    from tests.docker_env import require_sagemaker_sdk

    require_sagemaker_sdk()
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=CAPTURE)
    command, *flags = LAUNCHES[launch]
    where = ["--data", str(corpus), "--max_steps", "5"] if command == "train" else \
        [str(artifact), "--endpoint-name", f"genkiln-{launch.replace(' ', '-')}"]
    status = main([command, *where, "--mode", "sagemaker", "--outputs-file",
                   str(outputs_file), *flags])
    assert status == 0
    requests = [(op, r) for op, r in sent_requests(aws)
                if op.startswith("Create") and op not in ("CreateBucket",
                                                          "CreateMultipartUpload")]
    assert requests, aws
    found = [(op, why) for op, request in requests for why in violations(op, request)]
    assert not found, "\n".join(f"{op}: {why}" for op, why in found)
    if command == "deploy":
        model = next(r for op, r in requests if op == "CreateModel")
        config = next(r for op, r in requests if op == "CreateEndpointConfig")
        assert model["ExecutionRoleArn"] == SERVING_ROLE  # endpoints run as the serving role
        if "--serverless" not in flags:  # which supports neither
            assert model["EnableNetworkIsolation"] is True
            assert config["DataCaptureConfig"]["DestinationS3Uri"] == f"s3://{CAPTURE}/capture/"
            assert config["DataCaptureConfig"]["KmsKeyId"] == KMS


# --- each rule fires on what AWS refuses -------------------------------------------------
REFUSED: dict[str, tuple[str, Request]] = {
    "no-volume-key-on-local-storage": ("CreateTrainingJob", {"ResourceConfig": {
        "InstanceType": "ml.g5.xlarge", "VolumeKmsKeyId": KMS}}),
    "no-endpoint-key-on-local-storage": ("CreateEndpointConfig", {
        "KmsKeyId": KMS, "ProductionVariants": [{"InstanceType": "ml.g4dn.xlarge"}]}),
    "volume-within-local-storage": ("CreateProcessingJob", {"ProcessingResources": {
        "ClusterConfig": {"InstanceType": "ml.g5.xlarge", "VolumeSizeInGB": 500}}}),
    "serverless-endpoint-config": ("CreateEndpointConfig", {
        "DataCaptureConfig": {"EnableCapture": True},
        "ProductionVariants": [{"ServerlessConfig": {"MemorySizeInMB": 3000}}]}),
    "serverless-model": ("CreateModel", {"_serverless": True, "EnableNetworkIsolation": True,
                                         "VpcConfig": {"Subnets": ["s"]}}),
    "model-data-is-a-tarball": ("CreateModel", {"PrimaryContainer": {
        "ModelDataUrl": "s3://b/models/job/"}}),
    "hyperparameters-are-strings": ("CreateTrainingJob", {"HyperParameters": {"steps": 3}}),
    "resource-names": ("CreateEndpoint", {"EndpointName": "genkiln_dev.endpoint"}),
    "spot-waits-at-least-the-run": ("CreateTrainingJob", {
        "EnableManagedSpotTraining": True,
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 60}}),
    "variant-timeouts-and-counts": ("CreateEndpointConfig", {"ProductionVariants": [{
        "InstanceType": "ml.m5.large", "InitialInstanceCount": 0,
        "ContainerStartupHealthCheckTimeoutInSeconds": 7200}]}),
    "gpu-runs-the-cuda-image": ("CreateTrainingJob", {
        "_images": {"cpu": CPU_IMAGE, "cuda": CUDA_IMAGE},
        "AlgorithmSpecification": {"TrainingImage": CPU_IMAGE},
        "ResourceConfig": {"InstanceType": "ml.p4d.24xlarge"}}),
    "autoscaled-updates-retain-capacity": ("CreateEndpoint", {"_autoscaled": True}),
    "checkpoints-per-pipeline-run": ("CreateTrainingJob", {
        "_pipeline": True, "CheckpointConfig": {"S3Uri": "s3://b/checkpoints/"}}),
}


def test_every_rule_is_shown_to_fire() -> None:
    assert set(REFUSED) == {rule.name for rule in RULES}


@pytest.mark.parametrize("rule", sorted(REFUSED))
def test_each_rule_refuses_what_aws_refuses(rule: str) -> None:
    operation, request = REFUSED[rule]
    assert any(v.startswith(f"{rule} (") for v in violations(operation, request)), rule
