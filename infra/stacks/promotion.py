"""The promotion stack: an approved model goes to staging, is smoke-tested, waits for a
person, then goes to prod (infra/constructs/promotion.py)."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_kms as kms
from constructs import Construct

from infra import layout, outputs
from infra.constructs.promotion import Promotion, Stage
from infra.constructs.storage import Storage
from infra.settings import Settings
from infra.stacks.training import TrainingStack

STAGES = ("staging", "prod")


def deploy_role_name(project: str, stage: str) -> str:
    return f"{project}-{stage}-deploy"


def serving_role_name(project: str, stage: str) -> str:
    return f"{project}-{stage}-serving"


class PromotionStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings,
                 storage: Storage, key: kms.IKey, training: TrainingStack,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        project = settings.project
        stages = []
        for name in STAGES:
            account = getattr(settings, f"{name}_account")
            elsewhere = bool(account) and account != settings.account
            stages.append(Stage(
                name=name, resource_prefix=f"{project}-{name}",
                endpoint_name=f"{project}-{name}-endpoint",
                instance_type=settings.instance_type,
                instance_count=max(1, settings.min_instances),
                serving_role_arn=(f"arn:aws:iam::{account}:role/"
                                  f"{serving_role_name(project, name)}" if elsewhere
                                  else training.serving_role.role_arn),
                # Another account's endpoint encrypts with its own default keys and
                # captures nothing here; this account's uses the project key and bucket.
                key_arn=None if elsewhere else key.key_arn,
                capture_uri=None if elsewhere else
                f"s3://{storage.capture.bucket_name}/{layout.CAPTURE}",
                deploy_role_arn=(f"arn:aws:iam::{account}:role/"
                                 f"{deploy_role_name(project, name)}" if elsewhere else None)))
        self.promotion = Promotion(
            self, "Promotion", name_prefix=f"{project}-{settings.stage}",
            model_package_group=training.registry.group_name, stages=stages, key=key,
            approval_email=settings.approval_email or settings.alarm_email)
        CfnOutput(self, outputs.PROMOTION_STATE_MACHINE,
                  value=self.promotion.state_machine.state_machine_arn)
        for stage in stages:
            CfnOutput(self, f"{stage.name.capitalize()}EndpointName",
                      value=stage.endpoint_name)
