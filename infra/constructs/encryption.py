"""The project's customer-managed KMS key."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct


class ProjectKey(Construct):
    """One symmetric key for buckets, data capture, job volumes and outputs.

    A customer-managed key (rather than the AWS-managed `aws/s3` key) lets the account
    owner audit and revoke every use of the project's data in one key policy, and lets
    SageMaker encrypt volumes and captured requests with the same key.
    """

    def __init__(self, scope: Construct, construct_id: str, *, alias: str,
                 removal_policy: RemovalPolicy, pending_window_days: int) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self, "Key",
            alias=alias,
            description="genkiln: data, model artifacts, captured requests and job volumes",
            enable_key_rotation=True,  # yearly rotation of the backing key material
            removal_policy=removal_policy,
            pending_window=Duration.days(pending_window_days),
        )
        # CloudWatch alarms publish to the KMS-encrypted alarm topic; the service needs
        # to make a data key for that, for this account's alarms only.
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsToEncryptedTopic",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],  # in a key policy, "*" means this key
            conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
        ))
