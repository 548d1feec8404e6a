"""The serving stack: one endpoint for a trained model, scaled and watched."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra import layout, outputs
from infra.constructs.alarms import EndpointAlarms
from infra.constructs.autoscaling import EndpointScaling
from infra.constructs.endpoint import Capacity, ModelEndpoint, ModelSource
from infra.constructs.monitor import EndpointMonitor
from infra.constructs.storage import Storage
from infra.settings import Settings
from infra.stacks.training import TrainingStack


class ServingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 settings: Settings,
                 storage: Storage, key: kms.IKey, training: TrainingStack,
                 scale_down_at_night: bool, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        kind = settings.endpoint_kind
        network = training.network
        self._settings, self._storage, self._key, self._training = settings, storage, key, \
            training
        artifacts = f"s3://{storage.artifacts.bucket_name}/"
        endpoint_name, suffix = self.endpoint_name(name_prefix, settings)
        self.endpoint, self.scaling = self._endpoint(
            kind, endpoint_name, suffix, floor=settings.min_instances,
            scale_down_at_night=scale_down_at_night)
        # Requests over 6 MB (or marked long) go to an asynchronous twin of the endpoint.
        self.async_endpoint = None
        if settings.async_endpoint:
            async_name = endpoint_name.replace("-endpoint-", "-endpoint-async-", 1)
            # It may rest at zero instances until a request waits.
            self.async_endpoint, _ = self._endpoint(
                "async", async_name, f"Async{suffix}", floor=0,
                scale_down_at_night=scale_down_at_night)
        self.alarms = EndpointAlarms(
            self, "Alarms", endpoint_name=self.endpoint.endpoint_name,
            variant_name=self.endpoint.variant_name, key=key,
            latency_ms=settings.latency_alarm_ms, alarm_email=settings.alarm_email,
            instance_backed=kind == "realtime" or (kind == "async"
                                                   and settings.min_instances > 0))

        self.monitor = None
        if settings.monitor_hours:
            self.monitor = EndpointMonitor(
                self, "Monitor", name_prefix=name_prefix, endpoint_name=endpoint_name,
                image_uri=training.image_for("cpu").image_uri,
                role_arn=training.training_role.role_arn,
                pipeline_role=training.pipeline_role,
                # SageMaker captures under <destination>/<endpoint>/<variant>/y/m/d/h/.
                capture_uri=None if kind == "serverless" else
                f"s3://{storage.capture.bucket_name}/{layout.CAPTURE}{endpoint_name}/",
                feedback_uri=(f"s3://{storage.capture.bucket_name}/{layout.FEEDBACK}"
                              if settings.feedback_capture else None),
                output_uri=f"{artifacts}{layout.EVALUATIONS}monitor/", key_arn=key.key_arn,
                hours=settings.monitor_hours, topic=self.alarms.topic,
                subnet_ids=network.subnet_ids if network else None,
                security_group_ids=([network.security_group.security_group_id]
                                    if network else None))
            self.monitor.node.add_dependency(self.endpoint)

        CfnOutput(self, outputs.ENDPOINT_NAME, value=self.endpoint.endpoint.attr_endpoint_name)
        asynchronous = self.async_endpoint or (self.endpoint if kind == "async" else None)
        if asynchronous is not None:
            CfnOutput(self, outputs.ASYNC_ENDPOINT_NAME,
                      value=asynchronous.endpoint.attr_endpoint_name)

    def _endpoint(self, kind: str, endpoint_name: str, suffix: str, *, floor: int,
                  scale_down_at_night: bool) -> tuple[ModelEndpoint, EndpointScaling | None]:
        """One endpoint of the model, of ``kind``, and its scaling (none serverless)."""
        settings, storage, key, training = (self._settings, self._storage, self._key,
                                            self._training)
        network = training.network
        artifacts = f"s3://{storage.artifacts.bucket_name}/"
        # Serverless endpoints run on CPUs only.
        image = training.image_for("cpu" if kind == "serverless" else settings.instance_type)
        endpoint = ModelEndpoint(
            self, f"Endpoint{suffix}", endpoint_name=endpoint_name,
            role=training.serving_role, key=key,
            source=ModelSource(image_uri=image.image_uri,
                               model_artifact=settings.model_artifact,
                               model_package_arn=settings.model_package_arn),
            capacity=Capacity(kind=kind, instance_type=settings.instance_type,
                              initial_instances=max(1, settings.min_instances),
                              serverless_memory_mb=settings.serverless_memory_mb,
                              serverless_max_concurrency=settings.serverless_max_concurrency,
                              startup_health_check_seconds=settings.startup_health_check_seconds),
            capture_uri=f"s3://{storage.capture.bucket_name}/{layout.CAPTURE}",
            capture_percent=settings.data_capture_percent,
            async_output_uri=f"{artifacts}{layout.ASYNC_RESULTS}{endpoint_name}/responses",
            async_failure_uri=f"{artifacts}{layout.ASYNC_RESULTS}{endpoint_name}/failures",
            subnet_ids=network.subnet_ids if network else None,
            security_group_ids=([network.security_group.security_group_id]
                                if network else None),
            feedback_uri=(f"s3://{storage.capture.bucket_name}/{layout.FEEDBACK}"
                          if settings.feedback_capture else None),
            rollback_alarms=[EndpointAlarms.name(endpoint_name, "ServerErrors")],
        )
        # Serverless endpoints scale themselves (up to their concurrency limit).
        scaling = None
        if kind != "serverless":
            scaling = EndpointScaling(
                self, f"Scaling{suffix}", endpoint_name=endpoint.endpoint_name,
                variant_name=endpoint.variant_name, asynchronous=kind == "async",
                min_instances=floor,
                max_instances=settings.max_instances,
                target_per_instance=settings.target_invocations_per_instance,
                scale_down_at_night=scale_down_at_night)
            # The scalable target names the endpoint, which must exist first.
            scaling.node.add_dependency(endpoint.endpoint)
        return endpoint, scaling

    @staticmethod
    def endpoint_name(name_prefix: str, settings: Settings) -> tuple[str, str]:
        """The endpoint's name and its constructs' id suffix: `<prefix>-endpoint`, and for
        instance-backed endpoints the instance type after it
        (`genkiln-dev-endpoint-m5-large`, suffix `M5Large`). SageMaker refuses to change
        the instance type of a variant that autoscaling targets (endpoint-scaling-update
        in its guide), so a new instance type is a new endpoint, which CloudFormation
        creates (with its scaling) before it removes the old one; clients read the name
        from the EndpointName output."""
        if settings.endpoint_kind == "serverless":
            return f"{name_prefix}-endpoint", ""
        parts = settings.instance_type.removeprefix("ml.").split(".")
        return (f"{name_prefix}-endpoint-{'-'.join(parts)}",
                "".join(p.capitalize() for p in parts))
