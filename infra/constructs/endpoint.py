"""A SageMaker model, its endpoint configuration and the endpoint that serves it."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.instances import volume_key

VARIANT = "AllTraffic"
#: SageMaker asynchronous endpoints take request bodies up to 1 GB.
ASYNC_MAX_REQUEST_BYTES = 1024**3


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
    """Model → endpoint config → endpoint, with network isolation and KMS where SageMaker
    allows them.

    Requests and responses are captured (KMS-encrypted) under `capture_uri`; with
    `feedback_uri`, the server records generations and feedback there itself; an
    asynchronous endpoint reads requests and writes results under `async_output_uri`.
    SageMaker's rules decide the rest:

    - serverless endpoints take no volume key, no data capture, no VPC and no network
      isolation (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html);
    - instance types with local NVMe storage take no volume key (infra/instances.py);
    - an update keeps the variant's current instance count (RetainAllVariantProperties),
      so a new model does not undo what autoscaling chose, and a real-time endpoint
      updates blue/green, rolling back when `rollback_alarms` go off.
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str,
                 role: iam.IRole, key: kms.IKey, source: ModelSource, capacity: Capacity,
                 capture_uri: str, capture_percent: int, async_output_uri: str,
                 async_failure_uri: str, subnet_ids: list[str] | None = None,
                 security_group_ids: list[str] | None = None,
                 feedback_uri: str | None = None,
                 rollback_alarms: list[str] | None = None) -> None:
        super().__init__(scope, construct_id)
        serverless = capacity.kind == "serverless"
        # The names of inference.feedback_store's variables (infra imports no app code).
        if feedback_uri:
            environment = {"GENKILN_FEEDBACK_URI": feedback_uri,
                           "GENKILN_FEEDBACK_KMS_KEY_ID": key.key_arn}
        else:
            environment = {"GENKILN_FEEDBACK": "off"}
        if capacity.kind == "async":
            # An asynchronous request lives in S3 and may be up to 1 GB, not 6 MB.
            environment["GENKILN_MAX_REQUEST_BYTES"] = str(ASYNC_MAX_REQUEST_BYTES)
        if source.model_package_arn:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(
                model_package_name=source.model_package_arn, environment=environment)
        else:
            container = sagemaker.CfnModel.ContainerDefinitionProperty(
                image=source.image_uri, model_data_url=source.model_artifact,
                environment=environment)
        vpc = (sagemaker.CfnModel.VpcConfigProperty(
            subnets=subnet_ids, security_group_ids=security_group_ids or [])
            if subnet_ids and not serverless else None)
        self.model = sagemaker.CfnModel(
            self, "Model",
            execution_role_arn=role.role_arn,
            primary_container=container,
            # The serving container needs no network (the model is unpacked for it)
            # unless it writes feedback records to S3 itself.
            enable_network_isolation=not feedback_uri and not serverless,
            vpc_config=vpc,
        )
        self.model.node.add_dependency(role)

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
            # Encrypts instance volumes; SageMaker refuses a key where there are none.
            kms_key_id=None if serverless else volume_key(capacity.instance_type,
                                                          key.key_arn),
            data_capture_config=capture,
            async_inference_config=asynchronous,
        )
        deployment = None
        if capacity.kind == "realtime":
            deployment = sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint
                    .TrafficRoutingConfigProperty(type="ALL_AT_ONCE",
                                                  wait_interval_in_seconds=300),
                    termination_wait_in_seconds=300),
                auto_rollback_configuration=sagemaker.CfnEndpoint
                .AutoRollbackConfigProperty(alarms=[
                    sagemaker.CfnEndpoint.AlarmProperty(alarm_name=name)
                    for name in rollback_alarms or []]) if rollback_alarms else None)
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.config.attr_endpoint_config_name,
            retain_all_variant_properties=None if serverless else True,
            deployment_config=deployment,
        )
        self.endpoint_name = endpoint_name
        self.variant_name = VARIANT
