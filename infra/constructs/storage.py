"""The project's buckets: data, model artifacts, capture and feedback, access logs."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra import layout
from infra.nag import acknowledge


class Storage(Construct):
    """Four private, versioned, TLS-only buckets; three of them encrypted with `key`.

    Attributes: `data`, `artifacts`, `capture` (captured requests and feedback) and
    `access_logs` (server access logs of the other three). What an endpoint captures
    expires: requests and answers after `capture_days`, generation records and judgements
    after `feedback_days`, asynchronous requests after a week.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey,
                 removal_policy: RemovalPolicy, noncurrent_version_days: int,
                 access_log_days: int, capture_days: int = 90,
                 feedback_days: int = 365) -> None:
        super().__init__(scope, construct_id)
        self._removal_policy = removal_policy
        self._noncurrent_version_days = noncurrent_version_days

        # S3 server access logging can only deliver to a bucket encrypted with S3-managed
        # keys (SSE-S3), so this one bucket does not use the project key.
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=removal_policy,
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-logs", expiration=Duration.days(access_log_days)),
                *self._version_rules(),
            ],
        )
        acknowledge(
            self.access_logs, rule="AwsSolutions-S1",
            reason="This is the access-log bucket itself; logging its own access would "
                   "write a log record for every log record delivered, without end.",
        )

        self.data = self._bucket("Data", key=key, log_prefix="data/")
        self.artifacts = self._bucket("Artifacts", key=key, log_prefix="artifacts/")
        self.capture = self._bucket("Capture", key=key, log_prefix="capture/", expire={
            layout.CAPTURE: capture_days, layout.FEEDBACK: feedback_days,
            layout.ASYNC_REQUESTS: 7})

    def _bucket(self, construct_id: str, *, key: kms.IKey, log_prefix: str,
                expire: dict[str, int] | None = None) -> s3.Bucket:
        expiry = [s3.LifecycleRule(id=f"expire-{prefix.strip('/')}", prefix=prefix,
                                   expiration=Duration.days(days))
                  for prefix, days in (expire or {}).items()]
        return s3.Bucket(
            self, construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,  # one data key per bucket cuts KMS calls and cost
            enforce_ssl=True,
            versioned=True,  # an overwritten model or data set can be restored
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            removal_policy=self._removal_policy,
            lifecycle_rules=[*self._version_rules(), *expiry],
        )

    def _version_rules(self) -> list[s3.LifecycleRule]:
        # Versioning keeps every overwrite; without expiry old versions cost forever.
        return [
            s3.LifecycleRule(
                id="expire-old-versions",
                noncurrent_version_expiration=Duration.days(self._noncurrent_version_days),
                abort_incomplete_multipart_upload_after=Duration.days(7),
                expired_object_delete_marker=True,
            )
        ]
