"""Serving stack: only when something is named to serve; isolated, encrypted, scaled, watched."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .conftest import INSTALL_HINT, MODEL_ARTIFACT, MODEL_PACKAGE, Assembly

Match = pytest.importorskip("aws_cdk.assertions", reason=INSTALL_HINT).Match


def test_no_serving_stack_until_a_model_is_named(default: Assembly) -> None:
    assert sorted(default.stacks) == ["genkiln-dev-data", "genkiln-dev-training"]


@pytest.fixture(scope="module")
def prod_serving(prod: Assembly) -> Any:
    return prod.template("serving")


def test_model_runs_isolated_in_the_vpc_with_the_artifact(prod_serving: Any) -> None:
    prod_serving.has_resource_properties("AWS::SageMaker::Model", {
        "EnableNetworkIsolation": True,
        "PrimaryContainer": {"ModelDataUrl": MODEL_ARTIFACT, "Image": Match.any_value()},
        "VpcConfig": {"Subnets": Match.any_value(), "SecurityGroupIds": Match.any_value()},
    })


def test_endpoint_config_encrypts_volumes_and_captured_data(prod_serving: Any) -> None:
    key = {"Fn::ImportValue": Match.string_like_regexp("genkiln-prod-data:.*ProjectKey")}
    prod_serving.has_resource_properties("AWS::SageMaker::EndpointConfig", {
        "KmsKeyId": key,
        "DataCaptureConfig": {
            "EnableCapture": True, "KmsKeyId": key, "InitialSamplingPercentage": 100,
            "DestinationS3Uri": {"Fn::Join": ["", Match.array_with(["/capture/"])]},
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
        "ProductionVariants": [Match.object_like({
            "VariantName": "AllTraffic", "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 2,
            "ContainerStartupHealthCheckTimeoutInSeconds": 900})],
    })
    prod_serving.has_resource_properties("AWS::SageMaker::Endpoint", {
        "EndpointName": "genkiln-prod-endpoint-m5-large",
        # An update keeps what autoscaling chose, and rolls back on server errors.
        "RetainAllVariantProperties": True,
        "DeploymentConfig": {
            "BlueGreenUpdatePolicy": Match.object_like({
                "TrafficRoutingConfiguration": Match.object_like({"Type": "ALL_AT_ONCE"})}),
            "AutoRollbackConfiguration": {"Alarms": [
                {"AlarmName": "genkiln-prod-endpoint-m5-large-ServerErrors"}]}}})


def test_autoscaling_tracks_invocations_within_the_context_bounds(prod_serving: Any) -> None:
    prod_serving.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ServiceNamespace": "sagemaker", "MinCapacity": 2, "MaxCapacity": 6,
        "ResourceId": "endpoint/genkiln-prod-endpoint-m5-large/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "ScheduledActions": Match.absent(),  # production is never capped at night
        "RoleARN": {"Fn::Join": ["", Match.array_with([Match.string_like_regexp(
            "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint$")])]}})
    # No role of the stack's own for scaling (the monitor's scheduler has one).
    prod_serving.resource_count_is("AWS::IAM::Role", 1)
    prod_serving.has_resource_properties("AWS::IAM::Role", {
        "AssumeRolePolicyDocument": {"Statement": [Match.object_like({
            "Principal": {"Service": "scheduler.amazonaws.com"}})]}})
    prod_serving.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "TargetValue": 50,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})})


def test_alarms_watch_errors_latency_and_instances(prod_serving: Any) -> None:
    prod_serving.resource_count_is("AWS::CloudWatch::Alarm", 5)  # and the monitor's two
    for metric, namespace in (("Invocation5XXErrors", "AWS/SageMaker"),
                              ("ModelLatency", "AWS/SageMaker"),
                              ("CPUUtilization", "/aws/sagemaker/Endpoints")):
        prod_serving.has_resource_properties("AWS::CloudWatch::Alarm", {
            "MetricName": metric, "Namespace": namespace,
            "AlarmActions": [{"Ref": Match.string_like_regexp("^AlarmsTopic")}],
            "Dimensions": Match.array_with([{"Name": "EndpointName",
                                             "Value": "genkiln-prod-endpoint-m5-large"}])})
    prod_serving.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "ModelLatency", "Threshold": 2_000_000})  # microseconds
    prod_serving.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "CPUUtilization", "TreatMissingData": "breaching"})
    prod_serving.has_resource_properties("AWS::SNS::Topic", {
        "KmsMasterKeyId": Match.any_value()})
    prod_serving.has_resource_properties("AWS::SNS::Subscription", {
        "Protocol": "email", "Endpoint": "ops@example.com"})


def test_dev_endpoints_are_capped_at_night(assemblies: dict[str, Assembly]) -> None:
    template = assemblies["realtime"].template("serving")
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 1, "MaxCapacity": 4,
        "ScheduledActions": Match.array_with([
            Match.object_like({"Schedule": "cron(0 19 ? * MON-FRI *)",
                               "ScalableTargetAction": {"MinCapacity": 1, "MaxCapacity": 1}}),
            Match.object_like({"Schedule": "cron(0 7 ? * MON-FRI *)",
                               "ScalableTargetAction": {"MinCapacity": 1, "MaxCapacity": 4}}),
        ])})


def test_async_endpoint_queues_in_s3_and_scales_from_zero(
        assemblies: dict[str, Assembly]) -> None:
    template = assemblies["async"].template("serving")
    template.has_resource_properties("AWS::SageMaker::Model", {
        "PrimaryContainer": {"ModelPackageName": MODEL_PACKAGE}})
    template.has_resource_properties("AWS::SageMaker::EndpointConfig", {
        "AsyncInferenceConfig": {"OutputConfig": Match.object_like({
            "KmsKeyId": Match.any_value(),
            "S3OutputPath": {"Fn::Join": ["", Match.array_with([
                "/async/genkiln-dev-endpoint-m5-large/responses"])]}})},
        "DataCaptureConfig": Match.object_like({"EnableCapture": True}),
    })
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "MinCapacity": 0, "MaxCapacity": 3})
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({
            "CustomizedMetricSpecification": Match.object_like({
                "MetricName": "ApproximateBacklogSizePerInstance"})})})
    template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "MetricName": "HasBacklogWithoutCapacity"})
    # With a floor of zero, an idle endpoint has no instance: that is not an alarm.
    template.resource_properties_count_is("AWS::CloudWatch::Alarm", {
        "MetricName": "CPUUtilization"}, 0)


def test_serverless_endpoint_has_no_instances_to_scale(
        assemblies: dict[str, Assembly]) -> None:
    template = assemblies["serverless"].template("serving")
    template.has_resource_properties("AWS::SageMaker::EndpointConfig", {
        "ProductionVariants": [Match.object_like({
            "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
            "InstanceType": Match.absent()})],
        "KmsKeyId": Match.absent(), "DataCaptureConfig": Match.absent()})
    # Serverless inference supports neither a VPC nor network isolation, even on a stage
    # whose jobs run in one.
    template.has_resource_properties("AWS::SageMaker::Model", {
        "VpcConfig": Match.absent(), "EnableNetworkIsolation": False})
    template.has_resource_properties("AWS::SageMaker::Endpoint", {
        "EndpointName": "genkiln-dev-endpoint", "DeploymentConfig": Match.absent(),
        "RetainAllVariantProperties": Match.absent()})
    template.resource_count_is("AWS::ApplicationAutoScaling::ScalableTarget", 0)
    template.resource_count_is("AWS::CloudWatch::Alarm", 4)  # errors, latency; monitor's


def test_an_async_endpoint_with_a_floor_of_zero_serves_at_night(
        assemblies: dict[str, Assembly]) -> None:
    template = assemblies["async"].template("serving")
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ScheduledActions": Match.array_with([Match.object_like({
            "Schedule": "cron(0 19 ? * MON-FRI *)",
            "ScalableTargetAction": {"MinCapacity": 0, "MaxCapacity": 1}})])})


def test_a_gpu_stage_builds_the_cuda_image_and_names_no_volume_key(
        assemblies: dict[str, Assembly]) -> None:
    gpu = assemblies["gpu"]
    assets = json.loads((gpu.outdir / f"{gpu.stack_name('training')}.assets.json").read_text())
    tags = {a["source"].get("dockerBuildArgs", {}).get("TORCH_VARIANT"): tag
            for tag, a in assets["dockerImages"].items()}
    assert sorted(tags) == ["cpu", "cuda"]
    serving = gpu.template("serving")
    serving.has_resource_properties("AWS::SageMaker::EndpointConfig", {
        "KmsKeyId": Match.absent(),  # ml.g5 has local NVMe storage
        "ProductionVariants": [Match.object_like({"InstanceType": "ml.g5.xlarge"})],
        "DataCaptureConfig": Match.object_like({"KmsKeyId": Match.any_value()})})
    [model] = serving.find_resources("AWS::SageMaker::Model").values()
    assert model["Properties"]["PrimaryContainer"]["Image"]["Fn::Sub"].endswith(
        f":{tags['cuda']}")  # the endpoint runs the CUDA build
    training = gpu.stacks[gpu.stack_name("training")]
    [pipeline] = [r for r in training["Resources"].values()
                  if r["Type"] == "AWS::SageMaker::Pipeline"]
    body = json.dumps(pipeline["Properties"]["PipelineDefinition"])
    assert f":{tags['cuda']}" in body and "VolumeKmsKeyId" not in body


def test_an_endpoint_records_nothing_unless_feedback_capture_is_on(prod_serving: Any) -> None:
    prod_serving.has_resource_properties("AWS::SageMaker::Model", {
        "EnableNetworkIsolation": True,
        "PrimaryContainer": {"Environment": {"GENKILN_FEEDBACK": "off"}}})


def test_feedback_capture_writes_to_the_feedback_prefix_with_the_project_key(
        assemblies: dict[str, Assembly]) -> None:
    template = assemblies["realtime"].template("serving")
    key = {"Fn::ImportValue": Match.string_like_regexp("genkiln-dev-data:.*ProjectKey")}
    template.has_resource_properties("AWS::SageMaker::Model", {
        # The server writes to S3 itself, which an isolated container cannot.
        "EnableNetworkIsolation": False,
        "PrimaryContainer": {"Environment": {
            "GENKILN_FEEDBACK_URI": {"Fn::Join": ["", Match.array_with([
                "s3://", {"Fn::ImportValue": Match.string_like_regexp("Capture")},
                "/feedback/"])]},
            "GENKILN_FEEDBACK_KMS_KEY_ID": key}}})


def test_a_monitor_runs_on_a_schedule_over_what_the_endpoint_captured(
        prod_serving: Any, prod: Assembly) -> None:
    prod_serving.has_resource_properties("AWS::Scheduler::Schedule", {
        "ScheduleExpression": "rate(24 hours)",
        "Target": Match.object_like({
            "SageMakerPipelineParameters": {"PipelineParameterList": [
                {"Name": "WindowHours", "Value": "24"}]}})})
    template = prod.stacks[prod.stack_name("serving")]
    [pipeline] = [r["Properties"] for r in template["Resources"].values()
                  if r["Type"] == "AWS::SageMaker::Pipeline"]
    assert pipeline["PipelineName"] == "genkiln-prod-monitor"
    body = json.dumps(pipeline["PipelineDefinition"])
    assert '\\"monitor\\"' in body and "--publish" in body
    assert "/capture/genkiln-prod-endpoint-m5-large/" in body  # this endpoint's capture
    for figure in ("quality_drift", "refusal_rate"):
        prod_serving.has_resource_properties("AWS::CloudWatch::Alarm", {
            "Namespace": "genkiln", "MetricName": figure,
            "AlarmName": f"genkiln-prod-endpoint-m5-large-{figure}",
            "AlarmActions": [{"Ref": Match.string_like_regexp("^AlarmsTopic")}]})


def test_large_requests_have_an_asynchronous_twin(assemblies: dict[str, Assembly]) -> None:
    template = assemblies["realtime"].template("serving")
    template.has_resource_properties("AWS::SageMaker::Endpoint", {
        "EndpointName": "genkiln-dev-endpoint-async-m5-large"})
    template.has_resource_properties("AWS::SageMaker::Model", {
        "PrimaryContainer": Match.object_like({"Environment": Match.object_like({
            "GENKILN_MAX_REQUEST_BYTES": str(1024**3)})})})  # S3 holds up to 1 GB
    template.has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ResourceId": "endpoint/genkiln-dev-endpoint-async-m5-large/variant/AllTraffic",
        "MinCapacity": 0})
    template.has_output("AsyncEndpointName", {"Value": {"Fn::GetAtt": [
        Match.string_like_regexp("^EndpointAsyncM5Large"), "EndpointName"]}})


def test_a_new_instance_type_is_a_new_endpoint() -> None:
    """SageMaker refuses to change the instance type of an autoscaled variant in place: the
    endpoint's name and constructs change with it, so CloudFormation replaces it."""
    from infra.settings import Settings
    from infra.stacks.serving import ServingStack

    small = ServingStack.endpoint_name("genkiln-dev", Settings(instance_type="ml.m5.large"))
    gpu = ServingStack.endpoint_name("genkiln-dev", Settings(instance_type="ml.g5.xlarge"))
    assert small == ("genkiln-dev-endpoint-m5-large", "M5Large")
    assert gpu == ("genkiln-dev-endpoint-g5-xlarge", "G5Xlarge")
    serverless = ServingStack.endpoint_name(
        "genkiln-dev", Settings(endpoint_kind="serverless", min_instances=0))
    assert serverless == ("genkiln-dev-endpoint", "")  # nothing autoscaled to protect
