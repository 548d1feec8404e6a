"""The training stack: who jobs run as, what they run, where results are registered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra import layout, outputs
from infra.constructs.image import ProjectImage
from infra.constructs.model_registry import ModelRegistry
from infra.constructs.network import JobNetwork
from infra.constructs.pipeline import TrainingPipeline
from infra.constructs.sagemaker_role import SageMakerRole
from infra.constructs.storage import Storage
from infra.pipeline_definition import PipelineInputs


class TrainingStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, project: str,
                 name_prefix: str, storage: Storage, key: kms.IKey, project_root: Path,
                 use_vpc: bool,
                 training_instance_type: str, family: str, max_val_loss: float,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.image = ProjectImage(self, "Image", project_root=project_root)
        self.registry = ModelRegistry(self, "Registry", group_name=f"{name_prefix}-models")
        self.network = (JobNetwork(self, "Network", flow_log_bucket=storage.access_logs)
                        if use_vpc else None)

        # The role training jobs, processing jobs and endpoints run as.
        execution = SageMakerRole(self, "ExecutionRole", description=(
            f"{project}: SageMaker training, evaluation and serving containers"))
        execution.allow_read(storage.data, prefix=layout.DATASETS)
        execution.allow_read(storage.artifacts, prefix=layout.MODELS)
        execution.allow_write(storage.artifacts, prefix=layout.MODELS)
        execution.allow_read(storage.artifacts, prefix=layout.CHECKPOINTS)
        execution.allow_write(storage.artifacts, prefix=layout.CHECKPOINTS)
        execution.allow_write(storage.artifacts, prefix=layout.EVALUATIONS)
        execution.allow_write(storage.artifacts, prefix=layout.ASYNC_RESULTS)
        execution.allow_write(storage.capture, prefix=layout.CAPTURE)
        execution.allow_read(storage.capture, prefix=layout.FEEDBACK)
        execution.allow_write(storage.capture, prefix=layout.FEEDBACK)  # the endpoint's records
        execution.allow_read(storage.capture, prefix=layout.ASYNC_REQUESTS)
        execution.allow_key_use(key)
        execution.allow_image_pull(self.image.repository)
        execution.allow_job_logs()
        if self.network:
            execution.allow_vpc_access()
        self.execution_role = execution.role

        # The role the pipeline runs as: it starts jobs and registers models, nothing else.
        pipeline_role = SageMakerRole(self, "PipelineRole", description=(
            f"{project}: SageMaker Pipelines orchestration of the training pipeline"))
        pipeline_role.allow_pass_to_sagemaker(execution.role)
        pipeline_role.allow_pipeline_steps(model_package_group=self.registry.group_name)
        pipeline_role.allow_read(storage.artifacts, prefix=layout.EVALUATIONS)
        pipeline_role.allow_key_use(key)

        self.pipeline = TrainingPipeline(
            self, "Pipeline", pipeline_name=f"{name_prefix}-train",
            pipeline_role=pipeline_role.role,
            inputs=PipelineInputs(
                role_arn=execution.role_arn,
                image_uri=self.image.image_uri,
                data_bucket=storage.data.bucket_name,
                artifact_bucket=storage.artifacts.bucket_name,
                key_arn=key.key_arn,
                model_package_group=self.registry.group_name,
                training_instance_type=training_instance_type,
                family=family,
                max_val_loss=max_val_loss,
                subnet_ids=self.network.subnet_ids if self.network else None,
                security_group_ids=([self.network.security_group.security_group_id]
                                    if self.network else None),
            ),
        )
        self.pipeline.pipeline.node.add_dependency(self.registry.group)

        CfnOutput(self, outputs.EXECUTION_ROLE_ARN, value=execution.role_arn)
        CfnOutput(self, outputs.IMAGE_URI, value=self.image.image_uri)
        CfnOutput(self, outputs.MODEL_PACKAGE_GROUP, value=self.registry.group_name)
        CfnOutput(self, outputs.PIPELINE_NAME, value=self.pipeline.pipeline_name)
        if self.network:
            CfnOutput(self, outputs.SUBNET_IDS, value=Fn.join(",", self.network.subnet_ids))
            CfnOutput(self, outputs.SECURITY_GROUP_ID,
                      value=self.network.security_group.security_group_id)
