"""The SageMaker Pipeline: train, evaluate, and register the model if it is good enough.

A pure function of names and ARNs that returns the pipeline definition document
(schema version 2020-12-01), so it can be read and tested without CDK; the pipeline
construct passes CDK tokens in and serialises the result into the template.

    Train ──> Evaluate ──> RegistrationCheck ──(registration.passed)──> Register
                                              └─(otherwise)──────────> NotGoodEnough (fails)

The evaluate step judges the model by the run's `RegisterIf` criterion (empty: the
trained family's own, so a GAN is judged on its Fréchet distance and an RBM on its probe
accuracy) and writes whether it passed into evaluation.json, which the condition reads.
Each run can override the parameters (`aws sagemaker start-pipeline-execution
--pipeline-parameters Name=Family,Value=vae Name=TrainData,Value=s3://...`); `TrainData`
has no default: every run names its data. The instance type is the stage's (it decides
the image, CUDA or not, and whether a volume key may be named: infra/instances.py), and
each run checkpoints under its own prefix, so no run resumes from another's state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra import layout
from infra.instances import volume_key, volume_size

# The training image prints metrics in a stable form; SageMaker reads them from the log.
# Any family may run, so these are every family's losses and objectives (a job takes 40).
METRIC_DEFINITIONS = [
    {"Name": name, "Regex": f"{name}=([0-9.eE+-]+)"}
    for name in ("train_loss", "val_loss", "d_loss", "g_loss", "val_perplexity", "val_fid",
                 "val_probe_accuracy", "val_auroc", "val_metric_gap", "in_key_share",
                 "episode_reward", "val_completion_rate", "val_lap_time_ratio",
                 "val_named_accuracy", "val_relation_accuracy")
]
EVALUATION_FILE = "evaluation.json"  # {"metrics": {...}, "registration": {"passed": ...}}
REGISTRATION_PASSED = "registration.passed"
REGISTRATION_REASON = "registration.reason"
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

    role_arn: str  # the training role the jobs run as
    image_uri: str  # the project image for the training instance type (train / evaluate)
    serving_image_uri: str  # the image the registered model is served with
    data_bucket: str
    artifact_bucket: str
    key_arn: str  # encrypts job volumes and outputs
    model_package_group: str
    training_instance_type: str
    family: str
    register_if: str = ""  # empty: the family's own criterion
    subnet_ids: list[str] | None = None  # set to run jobs in the project VPC
    security_group_ids: list[str] | None = None


def _get(path: str) -> dict[str, str]:
    return {"Get": path}


def _join(*values: Any) -> dict[str, Any]:
    return {"Std:Join": {"On": "", "Values": list(values)}}


def _parameters(inputs: PipelineInputs) -> list[dict[str, Any]]:
    return [
        {"Name": "Family", "Type": "String", "DefaultValue": inputs.family},
        # No default: a run names its data (s3://<data bucket>/datasets/<set>/), never the
        # whole datasets/ prefix where every launcher run's uploads also live.
        {"Name": "TrainData", "Type": "String"},
        {"Name": "MaxSteps", "Type": "String", "DefaultValue": "3000"},
        {"Name": "MaxRuntimeSeconds", "Type": "Integer", "DefaultValue": 86400},
        {"Name": "RegisterIf", "Type": "String", "DefaultValue": inputs.register_if},
        {"Name": "ApprovalStatus", "Type": "String",
         "DefaultValue": "PendingManualApproval"},
    ]


def _vpc(inputs: PipelineInputs) -> dict[str, Any]:
    if not inputs.subnet_ids:
        return {}
    return {"VpcConfig": {"Subnets": inputs.subnet_ids,
                          "SecurityGroupIds": inputs.security_group_ids or []}}


def _volume(inputs: PipelineInputs, size_gb: int) -> dict[str, Any]:
    """Volume size and key as the instance type allows (none with local NVMe storage)."""
    kind = inputs.training_instance_type
    key = volume_key(kind, inputs.key_arn)
    return {"VolumeSizeInGB": volume_size(kind, size_gb),
            **({"VolumeKmsKeyId": key} if key else {})}


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
            # Each execution its own prefix: a retried step resumes its own run, a new run
            # never inherits another's state.
            "CheckpointConfig": {"S3Uri": _join(artifacts + layout.CHECKPOINTS,
                                                _get("Execution.PipelineExecutionId")),
                                 "LocalPath": "/opt/ml/checkpoints"},
            "ResourceConfig": {"InstanceCount": 1,
                               "InstanceType": inputs.training_instance_type,
                               **_volume(inputs, 50)},
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
                                 "ContainerArguments": ["evaluate", "--register-if",
                                                        _get("Parameters.RegisterIf")]},
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
                "InstanceType": inputs.training_instance_type,
                **_volume(inputs, 30),
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
                    "Image": inputs.serving_image_uri,
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


def _evaluation(path: str) -> dict[str, Any]:
    return {"Std:JsonGet": {"PropertyFile": _get("Steps.Evaluate.PropertyFiles.Evaluation"),
                            "Path": path}}


def _check_step(inputs: PipelineInputs) -> dict[str, Any]:
    return {
        "Name": "RegistrationCheck",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [{"Type": "Equals", "LeftValue": _evaluation(REGISTRATION_PASSED),
                            "RightValue": True}],
            "IfSteps": [_register_step(inputs)],
            "ElseSteps": [{
                "Name": "NotGoodEnough",
                "Type": "Fail",
                "Arguments": {"ErrorMessage": _join(
                    "the model was not registered: ", _evaluation(REGISTRATION_REASON))},
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
