"""A deploy-target stack: what another account needs so the promotion can deploy there.

Deployed into the stage's own account (`npx cdk deploy genkiln-dev-deploy-target-prod`
with that account's credentials). It holds two roles with fixed names the promotion
workflow knows:

- `<project>-<stage>-deploy`: assumed by the promotion's state machine in the registry's
  account; it may create and update this stage's models, endpoint configurations and
  endpoint, read the approved model package, and hand the serving role to SageMaker;
- `<project>-<stage>-serving`: what the endpoint runs as; it reads model artifacts and
  pulls images from the registry's account (which shares them: the model package group's
  policy, the artifact bucket's policy, the key's policy; ECR: see docs/aws.md).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import layout
from infra.nag import acknowledge_wildcards


class DeployTargetStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, project: str, stage: str,
                 registry_account: str, model_package_group: str, promotion_role: str,
                 deploy_role_name: str, serving_role_name: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        stack = Stack.of(self)
        self.serving_role = iam.Role(
            self, "ServingRole", role_name=serving_role_name,
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"{project}: the {stage} endpoint, serving models of account "
                        f"{registry_account}")
        in_registry = {"StringEquals": {"s3:ResourceAccount": registry_account}}
        serving_statements = (
            iam.PolicyStatement(actions=["s3:GetObject", "s3:GetObjectVersion"],
                                resources=[f"arn:aws:s3:::*/{layout.MODELS}*"],
                                conditions=in_registry),
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:DescribeKey"],
                                resources=[f"arn:aws:kms:*:{registry_account}:key/*"]),
            iam.PolicyStatement(actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                         "ecr:BatchCheckLayerAvailability"],
                                resources=[f"arn:aws:ecr:*:{registry_account}:repository/*"]),
            iam.PolicyStatement(actions=["ecr:GetAuthorizationToken"], resources=["*"]),
            iam.PolicyStatement(actions=["logs:CreateLogGroup", "logs:CreateLogStream",
                                         "logs:PutLogEvents", "logs:DescribeLogStreams"],
                                resources=[stack.format_arn(
                                    service="logs", resource="log-group",
                                    resource_name="/aws/sagemaker/*",
                                    arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
        )
        for statement in serving_statements:
            self.serving_role.add_to_principal_policy(statement)

        self.deploy_role = iam.Role(
            self, "DeployRole", role_name=deploy_role_name,
            assumed_by=iam.ArnPrincipal(
                f"arn:aws:iam::{registry_account}:role/{promotion_role}"),
            description=f"{project}: the promotion workflow of account {registry_account} "
                        f"deploys the {stage} endpoint")
        names = f"{project}-{stage}-*"
        own = [stack.format_arn(service="sagemaker", resource=kind, resource_name=names)
               for kind in ("model", "endpoint-config", "endpoint")]
        self.deploy_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sagemaker:CreateModel", "sagemaker:CreateEndpointConfig",
                     "sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint",
                     "sagemaker:DescribeEndpoint", "sagemaker:InvokeEndpoint",
                     "sagemaker:AddTags"], resources=own))
        packages = (f"arn:aws:sagemaker:*:{registry_account}:model-package/"
                    f"{model_package_group}/*")
        self.deploy_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["sagemaker:DescribeModelPackage"], resources=[packages]))
        self.deploy_role.add_to_principal_policy(iam.PolicyStatement(
            actions=["iam:PassRole"], resources=[self.serving_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}))
        acknowledge_wildcards(
            self.serving_role, [r for s in serving_statements for r in s.resources],
            reason="The registry's account names its buckets, keys and image repositories "
                   "at deploy time, and SageMaker its log streams at run time; a condition "
                   "or the account in each ARN keeps the statements to that account's own.")
        acknowledge_wildcards(
            self.deploy_role, [*own, packages],
            reason="Each promotion names its models and endpoint configurations after the "
                   "package version and run; the patterns admit only this stage's names "
                   "and the registry's model package group.")
