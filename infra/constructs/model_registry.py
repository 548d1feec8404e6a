"""The model package group that the pipeline registers approved candidates into."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct


class ModelRegistry(Construct):
    """A SageMaker model package group; each registered model is a new version."""

    def __init__(self, scope: Construct, construct_id: str, *, group_name: str,
                 share_with: tuple[str, ...] = ()) -> None:
        """``share_with``: accounts whose endpoints deploy this group's models (the
        promotion's stages elsewhere): they may read the group and its versions."""
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        policy = None
        if share_with:
            group_arn = stack.format_arn(service="sagemaker", resource="model-package-group",
                                         resource_name=group_name)
            versions = stack.format_arn(service="sagemaker", resource="model-package",
                                        resource_name=f"{group_name}/*")
            policy = {"Version": "2012-10-17", "Statement": [{
                "Sid": "DeployFromOtherAccounts", "Effect": "Allow",
                "Principal": {"AWS": [f"arn:aws:iam::{a}:root" for a in share_with]},
                "Action": ["sagemaker:DescribeModelPackageGroup",
                           "sagemaker:DescribeModelPackage", "sagemaker:ListModelPackages"],
                "Resource": [group_arn, versions]}]}
        self.group = sagemaker.CfnModelPackageGroup(
            self, "Group",
            model_package_group_name=group_name,
            model_package_group_description="genkiln models that passed evaluation",
            model_package_group_policy=policy,
        )
        self.group_name = group_name
        self.group_arn = self.group.attr_model_package_group_arn
