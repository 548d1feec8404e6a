"""The model package group that the pipeline registers approved candidates into."""

from __future__ import annotations

from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """A SageMaker model package group; each registered model is a new version."""

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str) -> None:
        super().__init__(scope, construct_id)
        self.group = sagemaker.CfnModelPackageGroup(
            self, "Group",
            model_package_group_name=group_name,
            model_package_group_description="genkiln models that passed evaluation",
        )
        self.group_name = group_name
        self.group_arn = self.group.attr_model_package_group_arn
