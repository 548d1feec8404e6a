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
from infra.instances import is_gpu
from infra.pipeline_definition import PipelineInputs


class TrainingStack(Stack):
    """Roles, the project image(s), the model registry and the training pipeline.

    Two roles run containers: the training role (training, evaluation and monitoring
    jobs: reads data sets, writes models and checkpoints) and the serving role (endpoints:
    reads models, writes captured requests and feedback records, nothing else), so a
    serving container can neither overwrite a model nor read a data set.
    """

    def __init__(self, scope: Construct, construct_id: str, *, project: str,
                 name_prefix: str, storage: Storage, key: kms.IKey, project_root: Path,
                 use_vpc: bool, training_instance_type: str, serving_instance_type: str,
                 family: str, register_if: str, image_variants: tuple[str, ...],
                 share_models_with: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.images = {variant: ProjectImage(self, "Image" if variant == "cpu" else "CudaImage",
                                             project_root=project_root, variant=variant)
                       for variant in image_variants}
        self.registry = ModelRegistry(self, "Registry", group_name=f"{name_prefix}-models",
                                      share_with=share_models_with)
        self.network = (JobNetwork(self, "Network", flow_log_bucket=storage.access_logs)
                        if use_vpc else None)

        training = self._role("ExecutionRole", f"{project}: SageMaker training, evaluation "
                                               "and monitoring jobs", key)
        training.allow_read(storage.data, prefix=layout.DATASETS)
        training.allow_read(storage.artifacts, prefix=layout.MODELS)  # refinement's base
        training.allow_write(storage.artifacts, prefix=layout.MODELS)
        training.allow_read(storage.artifacts, prefix=layout.CHECKPOINTS)
        training.allow_write(storage.artifacts, prefix=layout.CHECKPOINTS)
        training.allow_write(storage.artifacts, prefix=layout.EVALUATIONS)
        training.allow_read(storage.capture, prefix=layout.FEEDBACK)  # refinement's channel
        training.allow_read(storage.capture, prefix=layout.CAPTURE)  # the endpoint monitor
        training.allow_metrics(namespace="genkiln")  # the monitor's figures
        self.training_role = training.role

        serving = self._role("ServingRole", f"{project}: SageMaker endpoints", key)
        serving.allow_read(storage.artifacts, prefix=layout.MODELS)
        serving.allow_write(storage.capture, prefix=layout.CAPTURE)  # data capture
        serving.allow_read(storage.capture, prefix=layout.FEEDBACK)  # the endpoint's records
        serving.allow_write(storage.capture, prefix=layout.FEEDBACK)
        serving.allow_read(storage.capture, prefix=layout.ASYNC_REQUESTS)
        serving.allow_write(storage.artifacts, prefix=layout.ASYNC_RESULTS)
        self.serving_role = serving.role

        # The role the pipeline runs as: it starts jobs and registers models, nothing else.
        pipeline_name = f"{name_prefix}-train"
        pipeline_role = SageMakerRole(self, "PipelineRole", description=(
            f"{project}: SageMaker Pipelines orchestration of the training pipeline"))
        pipeline_role.allow_pass_to_sagemaker(training.role)
        pipeline_role.allow_pipeline_steps(model_package_group=self.registry.group_name)
        pipeline_role.allow_experiments(pipeline_name=pipeline_name)
        pipeline_role.allow_read(storage.artifacts, prefix=layout.EVALUATIONS)
        pipeline_role.allow_key_use(key)
        self.pipeline_role = pipeline_role.role  # the endpoint monitor's pipeline too

        self.pipeline = TrainingPipeline(
            self, "Pipeline", pipeline_name=pipeline_name,
            pipeline_role=pipeline_role.role,
            inputs=PipelineInputs(
                role_arn=training.role_arn,
                image_uri=self.image_for(training_instance_type).image_uri,
                serving_image_uri=self.image_for(serving_instance_type).image_uri,
                data_bucket=storage.data.bucket_name,
                artifact_bucket=storage.artifacts.bucket_name,
                key_arn=key.key_arn,
                model_package_group=self.registry.group_name,
                training_instance_type=training_instance_type,
                family=family,
                register_if=register_if,
                subnet_ids=self.network.subnet_ids if self.network else None,
                security_group_ids=([self.network.security_group.security_group_id]
                                    if self.network else None),
            ),
        )
        self.pipeline.pipeline.node.add_dependency(self.registry.group)

        CfnOutput(self, outputs.EXECUTION_ROLE_ARN, value=training.role_arn)
        CfnOutput(self, outputs.SERVING_ROLE_ARN, value=serving.role_arn)
        if "cpu" in self.images:
            CfnOutput(self, outputs.IMAGE_URI, value=self.images["cpu"].image_uri)
        if "cuda" in self.images:
            CfnOutput(self, outputs.CUDA_IMAGE_URI, value=self.images["cuda"].image_uri)
        CfnOutput(self, outputs.MODEL_PACKAGE_GROUP, value=self.registry.group_name)
        CfnOutput(self, outputs.PIPELINE_NAME, value=self.pipeline.pipeline_name)
        if self.network:
            CfnOutput(self, outputs.SUBNET_IDS, value=Fn.join(",", self.network.subnet_ids))
            CfnOutput(self, outputs.SECURITY_GROUP_ID,
                      value=self.network.security_group.security_group_id)

    def _role(self, construct_id: str, description: str, key: kms.IKey) -> SageMakerRole:
        """A role containers run as: the key, the image(s), logs, and the VPC if any."""
        role = SageMakerRole(self, construct_id, description=description)
        role.allow_key_use(key)
        for image in self.images.values():
            role.allow_image_pull(image.repository)
        role.allow_job_logs()
        if self.network:
            role.allow_vpc_access(
                vpc_id=self.network.vpc.vpc_id, subnet_ids=self.network.subnet_ids,
                security_group_ids=[self.network.security_group.security_group_id])
        return role

    def image_for(self, instance_type: str) -> ProjectImage:
        """The image a job or endpoint on ``instance_type`` runs: CUDA on a GPU ("cpu"
        for serverless endpoints, which have none)."""
        wanted = "cuda" if is_gpu(instance_type) else "cpu"
        if wanted not in self.images:
            raise ValueError(f"{instance_type} needs the {wanted} image, which this stage does "
                             f"not build: set genkiln:images to auto or both")
        return self.images[wanted]
