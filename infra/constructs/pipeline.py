"""The training pipeline as a SageMaker Pipeline resource a user can start."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.pipeline_definition import PipelineInputs, pipeline_definition


class TrainingPipeline(Construct):
    """Train → evaluate → register-if-good-enough, run by `pipeline_role`.

    The jobs themselves run as the execution role named in `inputs`; the pipeline's
    own role only starts them and registers the result.
    """

    def __init__(self, scope: Construct, construct_id: str, *, pipeline_name: str,
                 pipeline_role: iam.IRole, inputs: PipelineInputs) -> None:
        super().__init__(scope, construct_id)
        # to_json_string keeps CDK tokens (ARNs, bucket names) resolvable inside the
        # JSON text; a plain json.dumps would freeze their placeholder strings.
        body = Stack.of(self).to_json_string(pipeline_definition(inputs))
        self.pipeline = sagemaker.CfnPipeline(
            self, "Pipeline",
            pipeline_name=pipeline_name,
            pipeline_display_name=pipeline_name,
            pipeline_description="genkiln: train, evaluate, register if val_loss passes",
            role_arn=pipeline_role.role_arn,
            pipeline_definition={"PipelineDefinitionBody": body},
        )
        # The role's statements must exist before SageMaker validates the pipeline.
        policy = pipeline_role.node.try_find_child("DefaultPolicy")
        if policy is not None:
            self.pipeline.node.add_dependency(policy)
        self.pipeline_name = pipeline_name
