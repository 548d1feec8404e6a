"""Training stack: least-privilege roles, the image, the registry, network, pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .conftest import INSTALL_HINT, Assembly

Match = pytest.importorskip("aws_cdk.assertions", reason=INSTALL_HINT).Match

# APIs that IAM only authorises on "*"; any other action on "*" is a defect.
# Only these take no resource ARN; EC2's network-interface writes do (and are scoped to
# the project's VPC, subnets and security group).
RESOURCELESS_ACTIONS = {
    "ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
    "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
}


def our_statements(assembly: Assembly) -> list[dict[str, Any]]:
    """Statements of the project's own roles (CDK's VPC custom-resource role excluded)."""
    statements = []
    for template in assembly.stacks.values():
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::IAM::Policy":
                statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return statements


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def pipeline_document(template: dict[str, Any]) -> dict[str, Any]:
    """The pipeline definition JSON, with CloudFormation values replaced by placeholders."""
    (pipeline,) = [r for r in template["Resources"].values()
                   if r["Type"] == "AWS::SageMaker::Pipeline"]
    body = pipeline["Properties"]["PipelineDefinition"]["PipelineDefinitionBody"]
    if isinstance(body, dict):  # {"Fn::Join": ["", [text, {intrinsic}, text, ...]]}
        body = "".join(p if isinstance(p, str) else "CFN" for p in body["Fn::Join"][1])
    return json.loads(body)


def test_sagemaker_assumes_the_three_roles_and_no_managed_policy(
        training_template: Any) -> None:
    # training jobs, endpoints, the pipeline
    training_template.resource_count_is("AWS::IAM::Role", 3)
    training_template.all_resources_properties("AWS::IAM::Role", {
        "AssumeRolePolicyDocument": {"Statement": [{
            "Action": "sts:AssumeRole", "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"}}]},
        "ManagedPolicyArns": Match.absent()})


def test_no_wildcard_actions_anywhere(default: Assembly, prod: Assembly) -> None:
    for assembly in (default, prod):
        for statement in our_statements(assembly):
            for action in as_list(statement["Action"]):
                assert "*" not in action, statement


def test_only_resourceless_apis_are_granted_on_star(default: Assembly,
                                                    prod: Assembly) -> None:
    for assembly in (default, prod):
        for statement in our_statements(assembly):
            if "*" in as_list(statement["Resource"]):
                assert set(as_list(statement["Action"])) <= RESOURCELESS_ACTIONS, statement


def test_metrics_are_limited_to_sagemaker_namespaces(training_template: Any) -> None:
    training_template.has_resource_properties("AWS::IAM::Policy", {
        "PolicyDocument": {"Statement": Match.array_with([{
            "Action": "cloudwatch:PutMetricData", "Effect": "Allow", "Resource": "*",
            "Condition": {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}}}])}})


def test_s3_access_is_scoped_to_prefixes(default: Assembly) -> None:
    object_resources = []
    for statement in our_statements(default):
        actions = as_list(statement["Action"])
        if any(a.startswith("s3:") for a in actions):
            assert "s3:DeleteObject" not in actions
            if actions == ["s3:ListBucket"]:
                # Listing is limited to the same prefixes through s3:prefix.
                prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
                assert all(p.endswith("/*") and len(p) > 2 for p in prefixes)
            else:
                object_resources += as_list(statement["Resource"])
    suffixes = {r["Fn::Join"][1][-1] for r in object_resources}
    assert suffixes == {"/datasets/*", "/models/*", "/checkpoints/*", "/evaluations/*",
                        "/async/*", "/capture/*", "/feedback/*", "/async-requests/*"}


def test_pipeline_role_passes_only_the_execution_role_only_to_sagemaker(
        training_template: Any) -> None:
    roles = training_template.find_resources("AWS::IAM::Role", {
        "Properties": {"Description": Match.string_like_regexp("training, evaluation")}})
    (execution,) = roles
    training_template.has_resource_properties("AWS::IAM::Policy", {
        "PolicyDocument": {"Statement": Match.array_with([{
            "Action": "iam:PassRole", "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [execution, "Arn"]},
            "Condition": {"StringEquals": {
                "iam:PassedToService": "sagemaker.amazonaws.com"}}}])}})


def test_model_package_group_and_pipeline_exist(training_template: Any) -> None:
    training_template.has_resource_properties("AWS::SageMaker::ModelPackageGroup", {
        "ModelPackageGroupName": "genkiln-dev-models"})
    training_template.has_resource_properties("AWS::SageMaker::Pipeline", {
        "PipelineName": "genkiln-dev-train",
        "RoleArn": {"Fn::GetAtt": [Match.string_like_regexp("^PipelineRole"), "Arn"]}})


def test_pipeline_in_the_template_trains_evaluates_and_registers(default: Assembly) -> None:
    document = pipeline_document(default.stacks[default.stack_name("training")])
    assert [s["Name"] for s in document["Steps"]] == ["Train", "Evaluate",
                                                       "RegistrationCheck"]
    train = document["Steps"][0]["Arguments"]
    assert train["EnableNetworkIsolation"] is True
    assert "VpcConfig" not in train


def test_no_vpc_unless_asked(training_template: Any) -> None:
    training_template.resource_count_is("AWS::EC2::VPC", 0)


def test_vpc_is_private_with_endpoints_and_flow_logs(prod: Assembly) -> None:
    template = prod.template("training")
    template.resource_count_is("AWS::EC2::VPC", 1)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.all_resources_properties("AWS::EC2::Subnet", {"MapPublicIpOnLaunch": False})
    template.resource_count_is("AWS::EC2::FlowLog", 1)
    endpoints = template.find_resources("AWS::EC2::VPCEndpoint")
    assert len(endpoints) == 6  # S3 gateway + ECR API, ECR Docker, Logs, STS, CloudWatch
    # No security group admits traffic from outside the VPC.
    for group in template.find_resources("AWS::EC2::SecurityGroup").values():
        for rule in group["Properties"].get("SecurityGroupIngress", []):
            assert rule.get("CidrIp") != "0.0.0.0/0"
    for rule in template.find_resources("AWS::EC2::SecurityGroupIngress").values():
        assert "SourceSecurityGroupId" in rule["Properties"]
    document = pipeline_document(prod.stacks[prod.stack_name("training")])
    assert set(document["Steps"][0]["Arguments"]["VpcConfig"]) == {"Subnets",
                                                                   "SecurityGroupIds"}


def test_image_asset_builds_the_root_dockerfile_without_local_clutter(
        default: Assembly) -> None:
    manifest = json.loads((default.outdir / "manifest.json").read_text())
    images = [a for a in json.loads(
        (default.outdir / f"{default.stack_name('training')}.assets.json").read_text()
    )["dockerImages"].values()]
    assert len(images) == 1
    source = images[0]["source"]
    assert source.get("dockerFile", "Dockerfile") == "Dockerfile"
    assert source.get("platform") == "linux/amd64"
    context = default.outdir / source["directory"]
    assert (context / "Dockerfile").is_file()
    assert (context / "pyproject.toml").is_file()  # the image installs the package
    for clutter in (".venv", "node_modules", "cdk.out", ".git", ".pytest_cache"):
        assert not (context / clutter).exists(), clutter
    assert not list(Path(context).rglob("__pycache__"))
    assert manifest  # the assembly is complete


def prefix_actions(assembly: Assembly, role: str) -> dict[str, set[str]]:
    """prefix -> the S3 object actions the role whose description names ``role`` has."""
    template = assembly.stacks[assembly.stack_name("training")]
    [role_id] = [k for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"
                 and role in r["Properties"].get("Description", "")]
    actions: dict[str, set[str]] = {}
    for policy in template["Resources"].values():
        if policy["Type"] != "AWS::IAM::Policy" or policy["Properties"]["Roles"] != [
                {"Ref": role_id}]:
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            for resource in as_list(statement["Resource"]):
                if isinstance(resource, dict) and "Fn::Join" in resource:
                    tail = resource["Fn::Join"][1][-1]
                    if isinstance(tail, str) and tail.endswith("/*") and tail.count("/") == 2:
                        actions.setdefault(tail, set()).update(as_list(statement["Action"]))
    return actions


def test_the_serving_role_reads_models_and_writes_records_only(default: Assembly) -> None:
    serving = prefix_actions(default, "endpoints")
    assert serving["/models/*"] == {"s3:GetObject", "s3:GetObjectVersion"}  # never writes
    assert {"s3:PutObject", "s3:GetObject"} <= serving["/feedback/*"]
    assert "/datasets/*" not in serving and "/checkpoints/*" not in serving
    assert all("s3:DeleteObject" not in a for a in serving.values())


def test_the_training_role_only_reads_what_endpoints_capture(default: Assembly) -> None:
    training = prefix_actions(default, "training, evaluation")
    assert "s3:PutObject" in training["/models/*"] and "/datasets/*" in training
    assert training["/feedback/*"] == {"s3:GetObject", "s3:GetObjectVersion"}  # refinement
    assert training["/capture/*"] == {"s3:GetObject", "s3:GetObjectVersion"}  # the monitor


def test_network_interfaces_are_created_only_in_the_projects_vpc(prod: Assembly) -> None:
    writes = [s for s in our_statements(prod)
              if "ec2:DeleteNetworkInterface" in as_list(s["Action"])]
    assert writes
    for statement in writes:
        assert "*" not in as_list(statement["Resource"])
        assert set(statement["Condition"]["ArnEquals"]) == {"ec2:Vpc"}


def test_sagemaker_may_make_grants_on_the_key_for_aws_resources_only(
        default: Assembly) -> None:
    grants = [s for s in our_statements(default) if s["Action"] == "kms:CreateGrant"]
    assert len(grants) >= 3  # the training, serving and pipeline roles
    assert all(s["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
               for s in grants)


def test_the_pipeline_role_records_its_experiment(training_template: Any) -> None:
    training_template.has_resource_properties("AWS::IAM::Policy", {
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Action": Match.array_with(["sagemaker:AssociateTrialComponent",
                                        "sagemaker:CreateExperiment",
                                        "sagemaker:CreateTrial",
                                        "sagemaker:CreateTrialComponent"])})])}})
