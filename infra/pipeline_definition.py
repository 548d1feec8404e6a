"""The SageMaker Pipeline: train, evaluate, and register the model if it is good enough.

A pure function of names and ARNs that returns the pipeline definition document
(schema version 2020-12-01), so it can be read and tested without CDK; the pipeline
construct passes CDK tokens in and serialises the result into the template.

    Train ──> Evaluate ──> ValLossCheck ──(val_loss <= MaxValLoss)──> Register
                                         └─(otherwise)────────────> NotGoodEnough (fails)

Each run can override the parameters (`aws sagemaker start-pipeline-execution
--pipeline-parameters Name=Family,Value=vae ...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra import layout

# The training image prints metrics in a stable form; SageMaker reads them from the log.
METRIC_DEFINITIONS = [
    {"Name": "train_loss", "Regex": "train_loss=([0-9.eE+-]+)"},
    {"Name": "val_loss", "Regex": "val_loss=([0-9.eE+-]+)"},
]
EVALUATION_FILE = "evaluation.json"  # {"metrics": {"val_loss": {"value": X}}}
EVALUATION_VALUE_PATH = "metrics.val_loss.value"
# Where the processing job sees the model and writes its report.
_MODEL_INPUT = "/opt/ml/processing/model"
# The training data again: evaluation rebuilds the run's held-out split from it
# (`genkiln evaluate` reads these paths when it runs as a processing job).
_DATA_INPUT = "/opt/ml/processing/data"
_EVALUATION_OUTPUT = "/opt/ml/processing/evaluation"
_CONTENT_TYPES = ["application/json"]


@dataclass(frozen=True)
class PipelineInputs:
    """Everything the definition refers to; strings or CDK tokens."""

    role_arn: str  # the execution role the jobs run as
    image_uri: str  # the project image (train / evaluate / serve)
    data_bucket: str
    artifact_bucket: str
    key_arn: str  # encrypts job volumes and outputs
    model_package_group: str
    training_instance_type: str
    family: str
    max_val_loss: float
    subnet_ids: list[str] | None = None  # set to run jobs in the project VPC
    security_group_ids: list[str] | None = None


def _get(path: str) -> dict[str, str]:
    return {"Get": path}


def _join(*values: Any) -> dict[str, Any]:
    return {"Std:Join": {"On": "", "Values": list(values)}}


def _parameters(inputs: PipelineInputs) -> list[dict[str, Any]]:
    return [
        {"Name": "Family", "Type": "String", "DefaultValue": inputs.family},
        {"Name": "TrainData", "Type": "String",
         "DefaultValue": f"s3://{inputs.data_bucket}/{layout.DATASETS}"},
        {"Name": "TrainingInstanceType", "Type": "String",
         "DefaultValue": inputs.training_instance_type},
        {"Name": "MaxSteps", "Type": "String", "DefaultValue": "3000"},
        {"Name": "MaxRuntimeSeconds", "Type": "Integer", "DefaultValue": 86400},
        {"Name": "MaxValLoss", "Type": "Float", "DefaultValue": inputs.max_val_loss},
        {"Name": "ApprovalStatus", "Type": "String",
         "DefaultValue": "PendingManualApproval"},
    ]


def _vpc(inputs: PipelineInputs) -> dict[str, Any]:
    if not inputs.subnet_ids:
        return {}
    return {"VpcConfig": {"Subnets": inputs.subnet_ids,
                          "SecurityGroupIds": inputs.security_group_ids or []}}


def _train_step(inputs: PipelineInputs) -> dict[str, Any]:
    artifacts = f"s3://{inputs.artifact_bucket}/"
    return {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": inputs.image_uri,
                "TrainingInputMode": "File",
                "MetricDefinitions": METRIC_DEFINITIONS,
            },
            # SageMaker's API takes hyperparameters as a map of strings.
            "HyperParameters": {"family": _get("Parameters.Family"),
                                "max_steps": _get("Parameters.MaxSteps")},
            "InputDataConfig": [{
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": _get("Parameters.TrainData"),
                    "S3DataDistributionType": "FullyReplicated",
                }},
            }],
            "OutputDataConfig": {"S3OutputPath": artifacts + layout.MODELS,
                                 "KmsKeyId": inputs.key_arn},
            "CheckpointConfig": {"S3Uri": artifacts + layout.CHECKPOINTS,
                                 "LocalPath": "/opt/ml/checkpoints"},
            "ResourceConfig": {"InstanceCount": 1,
                               "InstanceType": _get("Parameters.TrainingInstanceType"),
                               "VolumeSizeInGB": 50,
                               "VolumeKmsKeyId": inputs.key_arn},
            "StoppingCondition": {"MaxRuntimeInSeconds": _get("Parameters.MaxRuntimeSeconds")},
            "RoleArn": inputs.role_arn,
            # The container gets no network at all: data and model move through S3 only.
            "EnableNetworkIsolation": True,
            "EnableInterContainerTrafficEncryption": True,
            **_vpc(inputs),
        },
    }


def _evaluate_step(inputs: PipelineInputs) -> dict[str, Any]:
    evaluations = _join(f"s3://{inputs.artifact_bucket}/{layout.EVALUATIONS}",
                        _get("Execution.PipelineExecutionId"))
    network: dict[str, Any] = {"EnableNetworkIsolation": True}
    if inputs.subnet_ids:
        network["VpcConfig"] = _vpc(inputs)["VpcConfig"]
    return {
        "Name": "Evaluate",
        "Type": "Processing",
        "Arguments": {
            "AppSpecification": {"ImageUri": inputs.image_uri,
                                 "ContainerArguments": ["evaluate"]},
            "ProcessingInputs": [{
                "InputName": "model",
                "S3Input": {"S3Uri": _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"),
                            "LocalPath": _MODEL_INPUT, "S3DataType": "S3Prefix",
                            "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"},
            }, {
                "InputName": "data",
                "S3Input": {"S3Uri": _get("Parameters.TrainData"), "LocalPath": _DATA_INPUT,
                            "S3DataType": "S3Prefix", "S3InputMode": "File",
                            "S3DataDistributionType": "FullyReplicated"},
            }],
            "ProcessingOutputConfig": {
                "KmsKeyId": inputs.key_arn,
                "Outputs": [{
                    "OutputName": "evaluation",
                    "S3Output": {"S3Uri": evaluations, "LocalPath": _EVALUATION_OUTPUT,
                                 "S3UploadMode": "EndOfJob"},
                }],
            },
            "ProcessingResources": {"ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": _get("Parameters.TrainingInstanceType"),
                "VolumeSizeInGB": 30,
                "VolumeKmsKeyId": inputs.key_arn,
            }},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "RoleArn": inputs.role_arn,
            "NetworkConfig": network,
        },
        "PropertyFiles": [{"PropertyFileName": "Evaluation", "OutputName": "evaluation",
                           "FilePath": EVALUATION_FILE}],
    }


def _register_step(inputs: PipelineInputs) -> dict[str, Any]:
    return {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": inputs.model_package_group,
            "ModelApprovalStatus": _get("Parameters.ApprovalStatus"),
            "InferenceSpecification": {
                "Containers": [{
                    "Image": inputs.image_uri,
                    "ModelDataUrl": _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"),
                }],
                "SupportedContentTypes": _CONTENT_TYPES,
                "SupportedResponseMIMETypes": _CONTENT_TYPES,
            },
            "ModelMetrics": {"ModelQuality": {"Statistics": {
                "ContentType": "application/json",
                "S3Uri": _join(_get("Steps.Evaluate.ProcessingOutputConfig.Outputs"
                                    "['evaluation'].S3Output.S3Uri"), f"/{EVALUATION_FILE}"),
            }}},
        },
    }


def _check_step(inputs: PipelineInputs) -> dict[str, Any]:
    val_loss = {"Std:JsonGet": {"PropertyFile": _get("Steps.Evaluate.PropertyFiles.Evaluation"),
                                "Path": EVALUATION_VALUE_PATH}}
    return {
        "Name": "ValLossCheck",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "LessThanOrEqualTo", "LeftValue": val_loss,
                            "RightValue": _get("Parameters.MaxValLoss")}],
            "IfSteps": [_register_step(inputs)],
            "ElseSteps": [{
                "Name": "NotGoodEnough",
                "Type": "Fail",
                "Arguments": {"ErrorMessage": _join(
                    "val_loss is above MaxValLoss (", _get("Parameters.MaxValLoss"),
                    "): the model was not registered")},
            }],
        },
    }


def pipeline_definition(inputs: PipelineInputs) -> dict[str, Any]:
    """The definition document, ready for `json.dumps` (or CDK's `to_json_string`)."""
    return {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": _parameters(inputs),
        "PipelineExperimentConfig": {
            "ExperimentName": _get("Execution.PipelineName"),
            "TrialName": _get("Execution.PipelineExecutionId"),
        },
        "Steps": [_train_step(inputs), _evaluate_step(inputs), _check_step(inputs)],
    }
