"""The CDK app: `npx cdk synth|deploy|destroy` runs `python3 -m infra.app` (see cdk.json).

This is the only module that knows about stages and environments. Everything a user
may change is a `genkiln:*` context key (see `infra/settings.py`); what differs
between stages (what survives a `cdk destroy`, whether endpoints are scaled down at
night) is the stage profile below.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import App, Environment, RemovalPolicy, Stack, Tags, Validations
from cdk_nag import AwsSolutionsChecks

from infra.constructs.promotion import role_name as promotion_role_name
from infra.settings import KEYS, Settings, SettingsError
from infra.stacks.data import DataStack
from infra.stacks.deploy_target import DeployTargetStack
from infra.stacks.promotion import PromotionStack, deploy_role_name, serving_role_name
from infra.stacks.serving import ServingStack
from infra.stacks.training import TrainingStack

PROJECT_ROOT = Path(__file__).resolve().parent.parent  # holds the Dockerfile


@dataclass(frozen=True)
class StageProfile:
    removal_policy: RemovalPolicy  # what `cdk destroy` does to the key and buckets
    key_pending_window_days: int  # a deleted key can be recovered this long
    scale_down_at_night: bool  # endpoints drop to their floor outside working hours


STAGES: dict[str, StageProfile] = {
    # A dev deployment is disposable: destroy removes (empty) buckets and the key.
    "dev": StageProfile(removal_policy=RemovalPolicy.DESTROY, key_pending_window_days=7,
                        scale_down_at_night=True),
    "staging": StageProfile(removal_policy=RemovalPolicy.RETAIN, key_pending_window_days=30,
                            scale_down_at_night=True),
    # Production data and keys survive a destroy; they are removed by hand, on purpose.
    "prod": StageProfile(removal_policy=RemovalPolicy.RETAIN, key_pending_window_days=30,
                         scale_down_at_night=False),
}


def build(app: App) -> list[Stack]:
    """Add the stacks that the context asks for to `app`, with cdk-nag checking them."""
    settings = Settings.from_context(app.node.try_get_context)
    if settings.stage not in STAGES:
        raise SettingsError(f"context key {KEYS['stage']}: must be one of "
                            f"{', '.join(STAGES)}, not {settings.stage!r}")
    profile = STAGES[settings.stage]
    # The CLI fills these from the credentials in use. Without credentials (offline
    # synth) it still sets a default region, but no account: then the stacks stay
    # environment-agnostic, with no literal region in the templates.
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    env = Environment(account=account,
                      region=os.environ.get("CDK_DEFAULT_REGION") if account else None)
    prefix = f"{settings.project}-{settings.stage}"
    elsewhere = settings.other_accounts()
    shared = tuple(sorted(set(elsewhere.values())))

    data = DataStack(
        app, f"{prefix}-data", env=env, project=settings.project,
        description=f"{settings.project} ({settings.stage}): key and buckets",
        removal_policy=profile.removal_policy,
        key_pending_window_days=profile.key_pending_window_days,
        noncurrent_version_days=settings.noncurrent_version_days,
        access_log_days=settings.access_log_days,
        capture_days=settings.capture_days, feedback_days=settings.feedback_days,
        share_models_with=shared,
    )
    training = TrainingStack(
        app, f"{prefix}-training", env=env, project=settings.project, name_prefix=prefix,
        description=f"{settings.project} ({settings.stage}): roles, image, pipeline",
        storage=data.storage, key=data.key, project_root=PROJECT_ROOT,
        use_vpc=settings.use_vpc, training_instance_type=settings.training_instance_type,
        serving_instance_type=settings.instance_type, family=settings.family,
        register_if=settings.register_if, image_variants=settings.image_variants(),
        share_models_with=shared,
    )
    stacks: list[Stack] = [data, training]
    if settings.serving:
        stacks.append(ServingStack(
            app, f"{prefix}-serving", env=env, name_prefix=prefix, settings=settings,
            description=f"{settings.project} ({settings.stage}): model endpoint",
            storage=data.storage, key=data.key, training=training,
            scale_down_at_night=profile.scale_down_at_night,
        ))

    if settings.promotion:
        stacks.append(PromotionStack(
            app, f"{prefix}-promotion", env=env, settings=settings,
            description=f"{settings.project} ({settings.stage}): approval-driven promotion",
            storage=data.storage, key=data.key, training=training))
        for stage, account in elsewhere.items():
            # Deployed with that account's credentials: the roles promotion uses there.
            stacks.append(DeployTargetStack(
                app, f"{prefix}-deploy-target-{stage}", env=Environment(account=account),
                description=f"{settings.project}: {stage} endpoints deployed from account "
                            f"{settings.account}",
                project=settings.project, stage=stage, registry_account=settings.account,
                model_package_group=training.registry.group_name,
                promotion_role=promotion_role_name(prefix),
                deploy_role_name=deploy_role_name(settings.project, stage),
                serving_role_name=serving_role_name(settings.project, stage)))

    for stack in stacks:
        Tags.of(stack).add("project", settings.project)
        Tags.of(stack).add("stage", settings.stage)
    # cdk-nag 3 is a policy-validation plugin: findings fail synthesis and land in
    # cdk.out/validation-report.json; acknowledgments are copied into template metadata.
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    return stacks


def main() -> None:
    app = App()
    build(app)
    app.synth()


if __name__ == "__main__":
    main()
