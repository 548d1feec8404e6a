"""The data stack: the project key and buckets, which outlive everything else."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import layout, outputs
from infra.constructs.encryption import ProjectKey
from infra.constructs.storage import Storage


class DataStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, project: str,
                 removal_policy: RemovalPolicy, key_pending_window_days: int,
                 noncurrent_version_days: int, access_log_days: int, capture_days: int,
                 feedback_days: int, share_models_with: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key = ProjectKey(self, "ProjectKey", alias=f"alias/{project}/{construct_id}",
                              removal_policy=removal_policy,
                              pending_window_days=key_pending_window_days).key
        self.storage = Storage(self, "Storage", key=self.key, removal_policy=removal_policy,
                               noncurrent_version_days=noncurrent_version_days,
                               access_log_days=access_log_days,
                               capture_days=capture_days, feedback_days=feedback_days)
        if share_models_with:
            self._share_models(share_models_with)

        CfnOutput(self, outputs.DATA_BUCKET, value=self.storage.data.bucket_name)
        CfnOutput(self, outputs.ARTIFACT_BUCKET, value=self.storage.artifacts.bucket_name)
        CfnOutput(self, outputs.CAPTURE_BUCKET, value=self.storage.capture.bucket_name)
        CfnOutput(self, outputs.ACCESS_LOG_BUCKET, value=self.storage.access_logs.bucket_name)
        CfnOutput(self, outputs.KEY_ARN, value=self.key.key_arn)

    def _share_models(self, accounts: tuple[str, ...]) -> None:
        """Endpoints in ``accounts`` (the promotion's stages there) read model artifacts:
        objects under models/ only, decrypted with the project key through S3 only."""
        principals = [iam.AccountPrincipal(a) for a in accounts]
        self.storage.artifacts.add_to_resource_policy(iam.PolicyStatement(
            sid="ModelsForOtherAccounts", principals=principals,
            actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[self.storage.artifacts.arn_for_objects(f"{layout.MODELS}*")]))
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="ModelsForOtherAccounts", principals=principals,
            actions=["kms:Decrypt", "kms:DescribeKey"], resources=["*"],
            conditions={"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}))
