"""The pipeline: train → evaluate → register only if the family's criterion passes."""

from __future__ import annotations

import json
import re
from typing import Any

from infra.pipeline_definition import (
    EVALUATION_FILE,
    METRIC_DEFINITIONS,
    PipelineInputs,
    pipeline_definition,
)

INPUTS = PipelineInputs(
    role_arn="arn:aws:iam::1:role/exec", image_uri="1.dkr.ecr.r.amazonaws.com/img:tag",
    serving_image_uri="1.dkr.ecr.r.amazonaws.com/img:serve",
    data_bucket="data-b", artifact_bucket="art-b", key_arn="arn:aws:kms:r:1:key/k",
    model_package_group="genkiln-dev-models", training_instance_type="ml.m5.xlarge",
    family="vae", register_if="val_fid<=20",
)
GPU = PipelineInputs(**{**INPUTS.__dict__, "training_instance_type": "ml.g5.xlarge"})


def steps_by_name(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}

    def walk(steps: list[dict[str, Any]]) -> None:
        for step in steps:
            found[step["Name"]] = step
            walk(step["Arguments"].get("IfSteps", []))
            walk(step["Arguments"].get("ElseSteps", []))

    walk(definition["Steps"])
    return found


def test_steps_run_in_order_and_register_only_past_the_check() -> None:
    definition = pipeline_definition(INPUTS)
    assert [s["Name"] for s in definition["Steps"]] == ["Train", "Evaluate",
                                                         "RegistrationCheck"]
    check = definition["Steps"][2]["Arguments"]
    assert [s["Type"] for s in check["IfSteps"]] == ["RegisterModel"]
    assert [s["Type"] for s in check["ElseSteps"]] == ["Fail"]
    (condition,) = check["Conditions"]
    # The evaluation judges by the run's criterion (any family's metric), the condition
    # reads its verdict: a GAN run is not failed for reporting no val_loss.
    assert condition["Type"] == "Equals" and condition["RightValue"] is True
    json_get = condition["LeftValue"]["Std:JsonGet"]
    assert json_get["Path"] == "registration.passed"
    assert json_get["PropertyFile"] == {"Get": "Steps.Evaluate.PropertyFiles.Evaluation"}
    fail = check["ElseSteps"][0]["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert fail[1]["Std:JsonGet"]["Path"] == "registration.reason"


def test_the_condition_reads_the_file_the_evaluate_step_writes() -> None:
    evaluate = steps_by_name(pipeline_definition(INPUTS))["Evaluate"]
    (prop,) = evaluate["PropertyFiles"]
    assert prop["PropertyFileName"] == "Evaluation"
    assert prop["FilePath"] == EVALUATION_FILE == "evaluation.json"
    outputs = evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert [o["OutputName"] for o in outputs] == [prop["OutputName"]]
    # The same image runs with the `evaluate` verb, on the trained model, judging it by
    # the run's criterion.
    assert evaluate["Arguments"]["AppSpecification"] == {
        "ImageUri": INPUTS.image_uri,
        "ContainerArguments": ["evaluate", "--register-if", {"Get": "Parameters.RegisterIf"}]}
    model_input, data_input = evaluate["Arguments"]["ProcessingInputs"]
    assert model_input["S3Input"]["S3Uri"] == {
        "Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    # Where the image's `evaluate` looks in a processing job, and the data training saw.
    from training.command import PROCESSING_DATA, PROCESSING_MODEL, PROCESSING_OUTPUT

    assert model_input["S3Input"]["LocalPath"] == str(PROCESSING_MODEL)
    assert data_input["S3Input"]["LocalPath"] == str(PROCESSING_DATA)
    assert data_input["S3Input"]["S3Uri"] == {"Get": "Parameters.TrainData"}
    (output,) = evaluate["Arguments"]["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["LocalPath"] == str(PROCESSING_OUTPUT)


def test_parameter_defaults_come_from_settings() -> None:
    parameters = {p["Name"]: p for p in pipeline_definition(INPUTS)["Parameters"]}
    assert parameters["Family"]["DefaultValue"] == "vae"
    assert parameters["RegisterIf"] == {"Name": "RegisterIf", "Type": "String",
                                        "DefaultValue": "val_fid<=20"}
    # A run names its data: no default that would mix every launcher upload.
    assert "DefaultValue" not in parameters["TrainData"]
    # The instance type is the stage's: it decides the image and the volume key.
    assert "TrainingInstanceType" not in parameters
    # Every reference to a parameter names one that exists.
    text = json.dumps(pipeline_definition(INPUTS))
    used = set(re.findall(r'"Parameters\.(\w+)"', text))
    assert used <= set(parameters)


def test_training_job_is_isolated_encrypted_and_reports_metrics() -> None:
    train = steps_by_name(pipeline_definition(INPUTS))["Train"]["Arguments"]
    assert train["EnableNetworkIsolation"] is True
    assert train["EnableInterContainerTrafficEncryption"] is True
    assert train["OutputDataConfig"] == {"S3OutputPath": "s3://art-b/models/",
                                         "KmsKeyId": INPUTS.key_arn}
    assert train["ResourceConfig"]["VolumeKmsKeyId"] == INPUTS.key_arn
    assert train["ResourceConfig"]["InstanceType"] == "ml.m5.xlarge"
    assert train["RoleArn"] == INPUTS.role_arn
    assert "VpcConfig" not in train
    # Hyperparameters are a string map (SageMaker's API); defaults come as parameters.
    assert train["HyperParameters"]["family"] == {"Get": "Parameters.Family"}
    assert train["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS


def test_metric_regexes_read_the_training_log() -> None:
    line = "step=300 train_loss=2.5e-01 val_loss=0.3125 val_fid=12.5 lr=1e-3"
    values = {m["Name"]: found.group(1) for m in METRIC_DEFINITIONS
              if (found := re.search(m["Regex"], line))}
    assert values == {"train_loss": "2.5e-01", "val_loss": "0.3125", "val_fid": "12.5"}
    assert len(METRIC_DEFINITIONS) <= 40  # SageMaker's limit per job


def test_every_family_is_judged_by_a_metric_it_reports() -> None:
    from training.evaluation.results import registration
    from training.models import FAMILIES

    for family in FAMILIES.values():
        name = registration({}, family.register_if)["metric"]
        assert name in family.metrics, family.name
        assert name in {m["Name"] for m in METRIC_DEFINITIONS}, family.name


def test_each_run_checkpoints_under_its_own_prefix() -> None:
    train = steps_by_name(pipeline_definition(INPUTS))["Train"]["Arguments"]
    uri = train["CheckpointConfig"]["S3Uri"]["Std:Join"]["Values"]
    assert uri == ["s3://art-b/checkpoints/", {"Get": "Execution.PipelineExecutionId"}]


def test_gpu_instances_with_local_storage_take_no_volume_key() -> None:
    steps = steps_by_name(pipeline_definition(GPU))
    train = steps["Train"]["Arguments"]["ResourceConfig"]
    assert train["InstanceType"] == "ml.g5.xlarge" and "VolumeKmsKeyId" not in train
    evaluate = steps["Evaluate"]["Arguments"]["ProcessingResources"]["ClusterConfig"]
    assert "VolumeKmsKeyId" not in evaluate
    # Outputs are still encrypted with the project key.
    assert steps["Train"]["Arguments"]["OutputDataConfig"]["KmsKeyId"] == INPUTS.key_arn


def test_jobs_join_the_vpc_when_one_is_given() -> None:
    inputs = PipelineInputs(**{**INPUTS.__dict__, "subnet_ids": ["subnet-1", "subnet-2"],
                               "security_group_ids": ["sg-1"]})
    steps = steps_by_name(pipeline_definition(inputs))
    expected = {"Subnets": ["subnet-1", "subnet-2"], "SecurityGroupIds": ["sg-1"]}
    assert steps["Train"]["Arguments"]["VpcConfig"] == expected
    assert steps["Evaluate"]["Arguments"]["NetworkConfig"] == {
        "EnableNetworkIsolation": True, "VpcConfig": expected}


def test_registered_model_serves_with_the_project_image() -> None:
    register = steps_by_name(pipeline_definition(INPUTS))["Register"]["Arguments"]
    assert register["ModelPackageGroupName"] == "genkiln-dev-models"
    (container,) = register["InferenceSpecification"]["Containers"]
    assert container == {"Image": INPUTS.serving_image_uri,
                         "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}
