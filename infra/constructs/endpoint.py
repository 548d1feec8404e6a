"""A SageMaker model, its endpoint configuration and the endpoint that serves it."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

VARIANT = "AllTraffic"


@dataclass(frozen=True)
class ModelSource:
    """What to serve: an artifact with the project image, or a registered package."""

    image_uri: str
    model_artifact: str = ""  # s3://…/model.tar.gz
    model_package_arn: str = ""


@dataclass(frozen=True)
class Capacity:
    """How the endpoint runs: on instances (real-time, async) or serverless."""

    kind: str  # realtime | serverless | async
    instance_type: str
    initial_instances: int
    serverless_memory_mb: int
    serverless_max_concurrency: int
    startup_health_check_seconds: int


class ModelEndpoint(Construct):
    """Model → endpoint config → endpoint, with network isolation and KMS everywhere.

    Requests and responses are captured (KMS-encrypted) under `capture_uri`; with
    `feedback_uri`, the server records generations and feedback there itself; an
    asynchronous endpoint reads requests and writes results under `async_output_uri`.
    Serverless endpoints take neither a volume key nor data capture (SageMaker rejects
    both there), so those two settings only apply to instance-backed kinds.
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str,
                 role: iam.IRole, key: kms.IKey, source: ModelSource, capacity: Capacity,
                 capture_uri: str, capture_percent: int, async_output_uri: str,
                 async_failure_uri: str, subnet_ids: list[str] | None = None,
                 security_group_ids: list[str] | None = None,
                 feedback_uri: str | None = None) -> None:
        super().__init__(scope, construct_id)
        # The names of inference.feedback_store's variables (infra imports no app code).
        if feedback_uri:
            environment = {"GENKILN_FEEDBACK_URI": feedback_uri,
                           "GENKILN_FEEDBACK_KMS_KEY_ID": key.key_arn}
        else:
            environment = {"GENKILN_FEEDBACK": "off"}
        if source.model_package_arn:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=source.model_package_arn, environment=environment)
        else:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(
                image=source.image_uri, model_data_url=source.model_artifact,
                environment=environment)
        vpc = (sagemaker.CfnModel.VpcConfigProperty(
            subnets=subnet_ids, security_group_ids=security_group_ids or [])
            if subnet_ids else None)
        self.model = sagemaker.CfnModel(
            self, "Model",
            execution_role_arn=role.role_arn,
            primary_container=container,
            # The serving container needs no network (the model is unpacked for it)
            # unless it writes feedback records to S3 itself.
            enable_network_isolation=not feedback_uri,
            vpc_config=vpc,
        )
        self.model.node.add_dependency(role)

        serverless = capacity.kind == "serverless"
        variant = sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=VARIANT,
            model_name=self.model.attr_model_name,
            initial_variant_weight=1.0,
            **({"serverless_config": sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
                    memory_size_in_mb=capacity.serverless_memory_mb,
                    max_concurrency=capacity.serverless_max_concurrency)}
               if serverless else {
                   "instance_type": capacity.instance_type,
                   "initial_instance_count": capacity.initial_instances,
                   # /ping must pass within this many seconds of container start.
                   "container_startup_health_check_timeout_in_seconds":
                       capacity.startup_health_check_seconds,
                   "model_data_download_timeout_in_seconds": 900,
               }),
        )
        capture = None if serverless else sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
            enable_capture=True,
            initial_sampling_percentage=capture_percent,
            destination_s3_uri=capture_uri,
            kms_key_id=key.key_arn,
            capture_options=[
                sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Input"),
                sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode="Output"),
            ],
            capture_content_type_header=sagemaker.CfnEndpointConfig
            .CaptureContentTypeHeaderProperty(json_content_types=["application/json"]),
        )
        asynchronous = None
        if capacity.kind == "async":
            asynchronous = sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
                output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                    s3_output_path=async_output_uri, s3_failure_path=async_failure_uri,
                    kms_key_id=key.key_arn),
                client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                    max_concurrent_invocations_per_instance=4),
            )
        self.config = sagemaker.CfnEndpointConfig(
            self, "Config",
            production_variants=[variant],
            kms_key_id=None if serverless else key.key_arn,  # encrypts instance volumes
            data_capture_config=capture,
            async_inference_config=asynchronous,
        )
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.config.attr_endpoint_config_name,
        )
        self.endpoint_name = endpoint_name
        self.variant_name = VARIANT
