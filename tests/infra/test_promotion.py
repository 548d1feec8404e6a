"""Promotion by approval: the registry's approval event starts a Step Functions workflow
that deploys to staging, smoke-tests, waits for a person, then deploys to prod."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import INSTALL_HINT, Assembly

Match = pytest.importorskip("aws_cdk.assertions", reason=INSTALL_HINT).Match

#: "SageMaker Model Package State Change", as EventBridge delivers it (the event's shape
#: from the SageMaker developer guide's EventBridge page).
APPROVED = {
    "version": "0", "id": "6a1b2c3d-0000-4000-8000-000000000000",
    "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
    "account": "123456789012", "time": "2026-12-03T10:00:00Z", "region": "us-east-1",
    "resources": ["arn:aws:sagemaker:us-east-1:123456789012:model-package/"
                  "genkiln-dev-models/3"],
    "detail": {"ModelPackageGroupName": "genkiln-dev-models", "ModelPackageVersion": 3,
               "ModelPackageArn": "arn:aws:sagemaker:us-east-1:123456789012:model-package/"
                                  "genkiln-dev-models/3",
               "ModelApprovalStatus": "Approved", "CreationTime": 1796292000000},
}


def transform(transformer: dict[str, Any], event: dict[str, Any]) -> Any:
    """An EventBridge input transformer: each `<name>` of the template replaced by the
    JSON of the value its path names in the event."""
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for key in path.removeprefix("$.").split("."):
            value = value[key]
        text = text.replace(f"<{name}>", json.dumps(value))
    return json.loads(text)


def definition(assembly: Assembly) -> dict[str, Any]:
    template = assembly.stacks[assembly.stack_name("promotion")]
    [machine] = [r for r in template["Resources"].values()
                 if r["Type"] == "AWS::StepFunctions::StateMachine"]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    # Tokens sit inside JSON strings; the partition reads as the standard one.
    return dict(json.loads("".join(
        p if isinstance(p, str) else "aws" if p == {"Ref": "AWS::Partition"} else "TOKEN"
        for p in parts)))


@pytest.fixture(scope="module")
def promotion(assemblies: dict[str, Assembly]) -> Assembly:
    return assemblies["promotion"]


def test_an_approval_in_the_registry_starts_the_workflow(promotion: Assembly) -> None:
    template = promotion.template("promotion")
    template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["aws.sagemaker"],
                         "detail-type": ["SageMaker Model Package State Change"],
                         "detail": {"ModelPackageGroupName": ["genkiln-dev-models"],
                                    "ModelApprovalStatus": ["Approved"]}},
        "Targets": [Match.object_like({
            "Arn": {"Ref": Match.string_like_regexp("^PromotionStateMachine")},
            "InputTransformer": {
                "InputPathsMap": {"detail-ModelPackageArn": "$.detail.ModelPackageArn"},
                "InputTemplate": '{"package_arn":<detail-ModelPackageArn>}'}})]})


def test_the_workflow_goes_staging_smoke_approval_prod_smoke(promotion: Assembly) -> None:
    states = definition(promotion)["States"]
    order, name = [], "Start"
    while name:  # the happy path: each state's Next (the Choices' InService branch)
        order.append(name)
        state = states[name]
        if state["Type"] == "Choice":
            name = next(c["Next"] for c in state["Choices"] if c.get("StringEquals")
                        == "InService")
        else:
            name = state.get("Next")
    assert order == [
        "Start", "DescribePackage", "CreateStagingModel", "CreateStagingConfig",
        "FindStagingEndpoint", "UpdateStagingEndpoint", "WaitStaging", "CheckStagingEndpoint",
        "StagingReady", "StagingInService", "AskStagingInfo", "SmokeStaging", "Approval",
        "CreateProdModel", "CreateProdConfig", "FindProdEndpoint", "UpdateProdEndpoint",
        "WaitProd", "CheckProdEndpoint", "ProdReady", "ProdInService", "AskProdInfo",
        "SmokeProd", "Promoted"]
    # A first deployment creates the endpoint; later ones update it, keeping capacity.
    assert states["FindStagingEndpoint"]["Catch"][0]["Next"] == "CreateStagingEndpoint"
    assert states["UpdateProdEndpoint"]["Parameters"]["RetainAllVariantProperties"] is True
    model = states["CreateStagingModel"]["Parameters"]
    assert model["PrimaryContainer"]["ModelPackageName.$"] == "$.model.arn"
    assert model["EnableNetworkIsolation"] is True
    # ml.g5 has local NVMe storage: no volume key (the rules test checks every task).
    assert "KmsKeyId" not in states["CreateProdConfig"]["Parameters"]
    # A smoke test that fails stops the run before prod.
    for smoke in ("AskStagingInfo", "SmokeStaging"):
        assert states[smoke]["Catch"][0]["Next"] == "StagingSmokeFailed"
    assert states["SmokeStaging"]["Parameters"]["Body.$"] == \
        "States.JsonToString($.smoke.info.smoke_request)"


def test_prod_waits_for_a_person_with_a_token(promotion: Assembly) -> None:
    approval = definition(promotion)["States"]["Approval"]
    assert approval["Resource"] == "arn:aws:states:::sns:publish.waitForTaskToken"
    assert approval["TimeoutSeconds"] == 7 * 24 * 3600
    message = approval["Parameters"]["Message.$"]
    assert "$$.Task.Token" in message and "send-task-success" in message
    assert approval["Catch"][0]["Next"] == "NotApproved"
    template = promotion.template("promotion")
    template.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ml@example.com"})
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_the_workflow_hands_sagemaker_only_the_serving_role(promotion: Assembly) -> None:
    template = promotion.template("promotion")
    template.has_resource_properties("AWS::IAM::Policy", {
        "PolicyDocument": {"Statement": Match.array_with([{
            "Action": "iam:PassRole", "Effect": "Allow",
            "Resource": {"Fn::ImportValue": Match.string_like_regexp("ServingRole")},
            "Condition": {"StringEquals": {
                "iam:PassedToService": "sagemaker.amazonaws.com"}}}])}})
    template.has_resource_properties("AWS::StepFunctions::StateMachine", {
        "TracingConfiguration": {"Enabled": True},
        "LoggingConfiguration": Match.object_like({"Level": "ALL"})})


def test_a_stage_in_another_account_is_deployed_through_its_deploy_role(
        assemblies: dict[str, Assembly]) -> None:
    cross = assemblies["crossaccount"]
    states = definition(cross)["States"]
    deploy = "arn:aws:iam::222222222222:role/genkiln-prod-deploy"
    assert states["CreateProdModel"]["Credentials"] == {"RoleArn": deploy}
    assert states["CreateProdModel"]["Parameters"]["ExecutionRoleArn"] == \
        "arn:aws:iam::222222222222:role/genkiln-prod-serving"
    assert "Credentials" not in states["CreateStagingModel"]  # staging stays here
    target = cross.template("deploy-target-prod")
    target.has_resource_properties("AWS::IAM::Role", {
        "RoleName": "genkiln-prod-deploy",
        "AssumeRolePolicyDocument": {"Statement": [Match.object_like({
            "Principal": {"AWS": "arn:aws:iam::111111111111:role/genkiln-dev-promotion"}})]}})
    target.has_resource_properties("AWS::IAM::Role", {"RoleName": "genkiln-prod-serving"})
    # The registry's account shares the group's versions, the models and the key.
    cross.template("training").has_resource_properties("AWS::SageMaker::ModelPackageGroup", {
        "ModelPackageGroupPolicy": {"Statement": [Match.object_like({
            "Principal": {"AWS": ["arn:aws:iam::222222222222:root"]}})]}})
    data = cross.template("data")
    data.has_resource_properties("AWS::S3::BucketPolicy", {
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Sid": "ModelsForOtherAccounts", "Action": ["s3:GetObject", "s3:GetObjectVersion"]})
        ])}})
    data.has_resource_properties("AWS::KMS::Key", {
        "KeyPolicy": {"Statement": Match.array_with([Match.object_like({
            "Sid": "ModelsForOtherAccounts",
            "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}})])}})


def test_the_approval_event_reaches_the_workflow_with_the_package(
        promotion: Assembly, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against moto: the registry's state change, the rule's pattern as synthesized (moto
    routes the matching event), its input transformer (applied as EventBridge documents
    it: a string value goes in quoted; moto's own transformer leaves the quotes out), and
    the workflow started with what they give it."""
    moto = pytest.importorskip("moto")
    import boto3

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    template = promotion.stacks[promotion.stack_name("promotion")]
    [rule] = [r["Properties"] for r in template["Resources"].values()
              if r["Type"] == "AWS::Events::Rule"]
    [target] = rule["Targets"]
    with moto.mock_aws():
        sagemaker = boto3.client("sagemaker")
        sagemaker.create_model_package_group(ModelPackageGroupName="genkiln-dev-models")
        package = sagemaker.create_model_package(
            ModelPackageGroupName="genkiln-dev-models",
            ModelApprovalStatus="PendingManualApproval", InferenceSpecification={
                "Containers": [{"Image": "1.dkr.ecr.us-east-1.amazonaws.com/g:1",
                                "ModelDataUrl": "s3://b/models/j/output/model.tar.gz"}],
                "SupportedContentTypes": ["application/json"],
                "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
        sagemaker.update_model_package(ModelPackageArn=package,
                                       ModelApprovalStatus="Approved")
        status = sagemaker.describe_model_package(ModelPackageName=package)
        event = {**APPROVED, "detail": {**APPROVED["detail"], "ModelPackageArn": package,
                                        "ModelApprovalStatus": status["ModelApprovalStatus"]}}
        # The rule as synthesized, delivering (for the test) to a queue instead.
        events, sqs = boto3.client("events"), boto3.client("sqs")
        queue = sqs.create_queue(QueueName="promotions")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        events.put_rule(Name="on-approval", EventPattern=json.dumps(rule["EventPattern"]))
        events.put_targets(Rule="on-approval", Targets=[{"Id": "workflow", "Arn": queue_arn}])
        for sent in (event, {**event, "detail": {**event["detail"],
                                                  "ModelApprovalStatus": "Rejected"}}):
            events.put_events(Entries=[{
                "Source": sent["source"], "DetailType": sent["detail-type"],
                "Detail": json.dumps(sent["detail"]), "Resources": sent["resources"]}])
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        [matched] = [json.loads(m["Body"]) for m in messages]  # the rejection matched none
        assert matched["detail"]["ModelApprovalStatus"] == "Approved"
        delivered = transform(target["InputTransformer"], matched)
        assert delivered == {"package_arn": package}
        # The workflow, started with that input.
        machine = boto3.client("stepfunctions").create_state_machine(
            name="genkiln-dev-promotion", definition=json.dumps(definition(promotion)),
            roleArn="arn:aws:iam::123456789012:role/genkiln-dev-promotion")
        run = boto3.client("stepfunctions").start_execution(
            stateMachineArn=machine["stateMachineArn"], input=json.dumps(delivered))
        described = boto3.client("stepfunctions").describe_execution(
            executionArn=run["executionArn"])
        assert json.loads(described["input"]) == {"package_arn": package}
