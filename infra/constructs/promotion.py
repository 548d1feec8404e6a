"""Promotion by approval: a Step Functions workflow from the registry to prod.

    registry: ModelApprovalStatus -> Approved   (console, or aws sagemaker update-model-package)
        -> EventBridge "SageMaker Model Package State Change"
        -> Deploy to staging -> Smoke test -> Approval (a person) -> Deploy to prod -> Smoke test

Each deployment creates a model from the package (`<stage>-v<version>-<run>`) and an
endpoint configuration of the same name, then creates the stage's endpoint or updates it
in place (keeping its instance count), and waits for it to be in service. The smoke test
asks the endpoint for `{"info": {}}` and sends the request it names (`smoke_request`:
every family's server declares one): a 4xx or 5xx fails the run before anything reaches
prod. The approval is a task token sent to an SNS topic (e-mail): the message carries
the two commands that approve (`aws stepfunctions send-task-success`) or reject it.

Everything is SageMaker's and Step Functions' own API (AWS SDK integrations): no Lambda
function, no deployer of our own. A stage in another account is deployed through the
role that account's deploy-target stack creates (`<project>-<stage>-deploy`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import CfnResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from infra.instances import volume_key
from infra.nag import acknowledge, acknowledge_wildcards

VARIANT = "AllTraffic"
#: How long the workflow waits for a person before it gives up (and prod is untouched).
APPROVAL_WAIT = Duration.days(7)
INFO_REQUEST = '{"info": {}}'


@dataclass(frozen=True)
class Stage:
    """Where and how one stage's endpoint runs."""

    name: str  # "staging" | "prod"
    resource_prefix: str  # its models and endpoint configurations: <prefix>-v<n>-<run>
    endpoint_name: str
    serving_role_arn: str
    instance_type: str
    instance_count: int
    key_arn: str | None = None  # volume and capture key (this account's stages)
    capture_uri: str | None = None  # data capture (this account's stages)
    deploy_role_arn: str | None = None  # assumed for a stage in another account


def role_name(name_prefix: str) -> str:
    return f"{name_prefix}-promotion"


class Promotion(Construct):
    """The workflow, its approval topic and the rule that starts it on approval.

    Attributes: `state_machine`, `rule`, `topic`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 model_package_group: str, stages: list[Stage], key: kms.IKey,
                 approval_email: str) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        self._prefix = name_prefix
        self._roles: dict[str, iam.IRole] = {}
        self.topic = sns.Topic(self, "Approvals", master_key=key, enforce_ssl=True,
                               display_name=f"{name_prefix} model promotion approvals")
        if approval_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(approval_email))

        start = sfn.Pass(self, "Start", parameters={
            "package.$": "$.package_arn",
            # The first group of the execution's id: short, unique per run.
            "run.$": "States.ArrayGetItem(States.StringSplit($$.Execution.Name, '-'), 0)"})
        describe = self._call(
            "DescribePackage", "sagemaker", "describeModelPackage",
            {"ModelPackageName.$": "$.package"},
            [self._arn("model-package", f"{model_package_group}/*")],
            result_selector={"arn.$": "$.ModelPackageArn",
                             "version.$": "$.ModelPackageVersion"},
            result_path="$.model")
        *first, last = stages
        chain = start.next(describe)
        for stage in first:
            chain = chain.next(self._deploy(stage)).next(self._smoke(stage))
        chain = chain.next(self._approval(stages[-1].name))
        chain = chain.next(self._deploy(last)).next(self._smoke(last))
        chain.next(sfn.Succeed(self, "Promoted"))

        log_group = logs.LogGroup(self, "Log", retention=logs.RetentionDays.ONE_YEAR,
                                  removal_policy=RemovalPolicy.DESTROY)
        # A role of a fixed name: another account's deploy role trusts exactly this one.
        self.role = iam.Role(self, "Role", role_name=role_name(name_prefix),
                             assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
                             description=f"{name_prefix}: the model promotion workflow")
        self.state_machine = sfn.StateMachine(
            self, "StateMachine", state_machine_name=f"{name_prefix}-promotion",
            role=self.role,
            definition_body=sfn.DefinitionBody.from_chainable(start),
            timeout=APPROVAL_WAIT.plus(Duration.hours(6)), tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL,
                                include_execution_data=True))
        # CDK makes the state machine depend on its role, which its RoleArn already does.
        machine = self.state_machine.node.default_child
        assert isinstance(machine, CfnResource)
        machine.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3005"]}})
        self._allow_pass_and_assume(stages)
        # Publishing to the KMS-encrypted approval topic makes a data key.
        self.state_machine.role.add_to_principal_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn]))

        self.rule = events.Rule(
            self, "OnApproval",
            description=f"an approved model package of {model_package_group} starts its "
                        f"promotion",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                detail={"ModelPackageGroupName": [model_package_group],
                        "ModelApprovalStatus": ["Approved"]}))
        self.rule.add_target(targets.SfnStateMachine(
            self.state_machine, input=events.RuleTargetInput.from_object({
                "package_arn": events.EventField.from_path("$.detail.ModelPackageArn")})))
        self._acknowledge(model_package_group, stages)

    # --- the workflow's pieces -------------------------------------------------------
    def _arn(self, resource: str, name: str, account: str | None = None) -> str:
        return self._stack.format_arn(service="sagemaker", resource=resource,
                                      resource_name=name, account=account)

    def _call(self, state_id: str, service: str, action: str, parameters: dict[str, object],
              resources: list[str], *, iam_action: str | None = None,
              result_selector: dict[str, object] | None = None,
              result_path: str | None = None, role: str | None = None) -> tasks.CallAwsService:
        return tasks.CallAwsService(
            self, state_id, service=service, action=action, iam_action=iam_action,
            parameters=parameters, iam_resources=resources, result_selector=result_selector,
            result_path=result_path or sfn.JsonPath.DISCARD,
            credentials=sfn.Credentials(role=sfn.TaskRole.from_role(self._imported(role)))
            if role else None)

    def _imported(self, arn: str) -> iam.IRole:
        """Another account's deploy role, imported once."""
        if arn not in self._roles:
            self._roles[arn] = iam.Role.from_role_arn(
                self, f"DeployRole{len(self._roles)}", arn, mutable=False)
        return self._roles[arn]

    def _deploy(self, stage: Stage) -> sfn.IChainable:
        """Model and config from the package, then the endpoint created or updated, then
        a wait until it is in service."""
        s, role = stage.name.capitalize(), stage.deploy_role_arn
        account = role.split(":")[4] if role else None
        name = f"States.Format('{stage.resource_prefix}-v{{}}-{{}}', $.model.version, $.run)"
        create_model = self._call(
            f"Create{s}Model", "sagemaker", "createModel", {
                "ModelName.$": name, "ExecutionRoleArn": stage.serving_role_arn,
                "EnableNetworkIsolation": True,
                "PrimaryContainer": {"ModelPackageName.$": "$.model.arn",
                                     "Environment": {"GENKILN_FEEDBACK": "off"}}},
            [self._arn("model", f"{stage.resource_prefix}-*", account)], role=role)
        variant: dict[str, object] = {"VariantName": VARIANT, "ModelName.$": name,
                                      "InstanceType": stage.instance_type,
                                      "InitialInstanceCount": stage.instance_count}
        config: dict[str, object] = {"EndpointConfigName.$": name,
                                     "ProductionVariants": [variant]}
        key = volume_key(stage.instance_type, stage.key_arn)
        if key:
            config["KmsKeyId"] = key
        if stage.capture_uri:
            config["DataCaptureConfig"] = {
                "EnableCapture": True, "InitialSamplingPercentage": 100,
                "DestinationS3Uri": stage.capture_uri, "KmsKeyId": stage.key_arn,
                "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
        create_config = self._call(
            f"Create{s}Config", "sagemaker", "createEndpointConfig", config,
            [self._arn("endpoint-config", f"{stage.resource_prefix}-*", account)],
            role=role)
        endpoint_arn = self._arn("endpoint", stage.endpoint_name, account)
        exists = self._call(f"Find{s}Endpoint", "sagemaker", "describeEndpoint",
                            {"EndpointName": stage.endpoint_name}, [endpoint_arn], role=role)
        create = self._call(f"Create{s}Endpoint", "sagemaker", "createEndpoint",
                            {"EndpointName": stage.endpoint_name,
                             "EndpointConfigName.$": name}, [endpoint_arn], role=role)
        update = self._call(f"Update{s}Endpoint", "sagemaker", "updateEndpoint",
                            {"EndpointName": stage.endpoint_name, "EndpointConfigName.$": name,
                             "RetainAllVariantProperties": True}, [endpoint_arn], role=role)
        wait = sfn.Wait(self, f"Wait{s}", time=sfn.WaitTime.duration(Duration.minutes(1)))
        status = self._call(f"Check{s}Endpoint", "sagemaker", "describeEndpoint",
                            {"EndpointName": stage.endpoint_name}, [endpoint_arn],
                            result_selector={"status.$": "$.EndpointStatus"},
                            result_path="$.endpoint", role=role)
        ready = sfn.Pass(self, f"{s}InService")
        failed = sfn.Fail(self, f"{s}DeployFailed", error="DeployFailed",
                          cause=f"the {stage.name} endpoint did not come into service")
        # No endpoint yet: create it; otherwise: update it in place.
        exists.add_catch(create, errors=["States.TaskFailed"], result_path=sfn.JsonPath.DISCARD)
        exists.next(update)
        create.next(wait)
        update.next(wait)
        wait.next(status).next(sfn.Choice(self, f"{s}Ready")
                               .when(sfn.Condition.string_equals("$.endpoint.status",
                                                                 "InService"), ready)
                               .when(sfn.Condition.string_equals("$.endpoint.status",
                                                                 "Failed"), failed)
                               .otherwise(wait))
        create_model.next(create_config).next(exists)
        return sfn.Chain.custom(create_model, [ready], ready)

    def _smoke(self, stage: Stage) -> sfn.IChainable:
        """`{"info": {}}`, then the request it names: both must answer 200."""
        s, role = stage.name.capitalize(), stage.deploy_role_arn
        account = role.split(":")[4] if role else None
        endpoint_arn = self._arn("endpoint", stage.endpoint_name, account)
        info = self._call(f"Ask{s}Info", "sagemakerruntime", "invokeEndpoint",
                          {"EndpointName": stage.endpoint_name,
                           "ContentType": "application/json", "Body": INFO_REQUEST},
                          [endpoint_arn], iam_action="sagemaker:InvokeEndpoint",
                          result_selector={"info.$": "States.StringToJson($.Body)"},
                          result_path="$.smoke", role=role)
        smoke = self._call(f"Smoke{s}", "sagemakerruntime", "invokeEndpoint",
                           {"EndpointName": stage.endpoint_name,
                            "ContentType": "application/json",
                            "Body.$": "States.JsonToString($.smoke.info.smoke_request)"},
                           [endpoint_arn], iam_action="sagemaker:InvokeEndpoint", role=role)
        failed = sfn.Fail(self, f"{s}SmokeFailed", error="SmokeTestFailed",
                          cause=f"the {stage.name} endpoint refused its smoke request")
        info.add_catch(failed, errors=["States.ALL"])
        smoke.add_catch(failed, errors=["States.ALL"])
        return info.next(smoke)

    def _approval(self, stage: str) -> sfn.IChainable:
        ask = tasks.SnsPublish(
            self, "Approval", topic=self.topic,
            integration_pattern=sfn.IntegrationPattern.WAIT_FOR_TASK_TOKEN,
            task_timeout=sfn.Timeout.duration(APPROVAL_WAIT),
            subject=f"{self._prefix}: approve a model for {stage}?",
            message=sfn.TaskInput.from_text(sfn.JsonPath.format(
                "Model package {} passed its staging smoke test. To deploy it to "
                + stage + ": aws stepfunctions send-task-success --task-output '{{}}' "
                "--task-token {}   To reject it: aws stepfunctions send-task-failure "
                "--error Rejected --task-token {}",
                sfn.JsonPath.string_at("$.model.arn"), sfn.JsonPath.task_token,
                sfn.JsonPath.task_token)),
            result_path=sfn.JsonPath.DISCARD)
        ask.add_catch(sfn.Fail(self, "NotApproved", error="NotApproved",
                               cause=f"the promotion to {stage} was rejected or timed out"),
                      errors=["States.ALL"])
        return ask

    def _allow_pass_and_assume(self, stages: list[Stage]) -> None:
        """CreateModel hands the stage's serving role to SageMaker; a stage in another
        account is reached through its deploy role."""
        role = self.state_machine.role
        here = [s.serving_role_arn for s in stages if not s.deploy_role_arn]
        if here:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["iam:PassRole"], resources=here,
                conditions={"StringEquals": {"iam:PassedToService":
                                             "sagemaker.amazonaws.com"}}))
        away = [s.deploy_role_arn for s in stages if s.deploy_role_arn]
        if away:
            role.add_to_principal_policy(iam.PolicyStatement(
                actions=["sts:AssumeRole"], resources=away))

    def _acknowledge(self, model_package_group: str, stages: list[Stage]) -> None:
        acknowledge(self.role, rule="AwsSolutions-IAM5[Resource::*]", reason=(
            "Step Functions' log delivery and X-Ray tracing (statements CDK adds) take no "
            "resource ARN; IAM requires '*' for them."))
        names = [self._arn(kind, f"{stage.resource_prefix}-*", account)
                 for stage in stages
                 for account in [stage.deploy_role_arn.split(":")[4]
                                 if stage.deploy_role_arn else None]
                 for kind in ("model", "endpoint-config")]
        acknowledge_wildcards(
            self.role, [self._arn("model-package", f"{model_package_group}/*"), *names],
            reason="A promotion reads the package version that was approved and names each "
                   "stage's model and endpoint configuration after it and its run, so only "
                   "the group's and the stage's prefixes can match them.")
