"""The endpoint monitor: a scheduled processing job over what the endpoint served.

    EventBridge Scheduler, every `hours` -> the `<prefix>-monitor` SageMaker Pipeline
        -> one processing job: the image's `monitor` verb (training/evaluation/monitor.py) reads the
           window's data capture and feedback records, writes monitor.json, and publishes
           the health figures as CloudWatch metrics (namespace genkiln)
        -> alarms on quality drift and the refusal rate, to the endpoint's alarm topic

A pipeline (rather than a bare schedule of CreateProcessingJob) names each job, keeps its
history, and takes its window as parameters that a person can change per run.
"""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.instances import volume_key

INSTANCE_TYPE = "ml.m5.large"
#: figure -> (alarm threshold, what it means); mirrors training.evaluation.monitor.ALARMS
ALARMS = {"quality_drift": (0.25, "answers drifted from the model's evaluation"),
          "refusal_rate": (0.2, "a fifth of the requests were refused with a 4xx")}


class EndpointMonitor(Construct):
    """Attributes: `pipeline`, `schedule`, `alarms`."""

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 endpoint_name: str, image_uri: str, role_arn: str, pipeline_role: iam.IRole,
                 capture_uri: str | None, feedback_uri: str | None, output_uri: str,
                 key_arn: str, hours: int, topic: sns.ITopic,
                 subnet_ids: list[str] | None = None,
                 security_group_ids: list[str] | None = None) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        inputs = []
        for name, uri in (("capture", capture_uri), ("feedback", feedback_uri)):
            if uri:
                inputs.append({"InputName": name, "S3Input": {
                    "S3Uri": uri, "LocalPath": f"/opt/ml/processing/{name}",
                    "S3DataType": "S3Prefix", "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated"}})
        key = volume_key(INSTANCE_TYPE, key_arn)
        network: dict[str, object] = {}  # not isolated: it publishes CloudWatch metrics
        if subnet_ids:
            network["VpcConfig"] = {"Subnets": subnet_ids,
                                    "SecurityGroupIds": security_group_ids or []}
        step = {
            "Name": "Monitor", "Type": "Processing",
            "Arguments": {
                "AppSpecification": {"ImageUri": image_uri, "ContainerArguments": [
                    "monitor", "--hours", {"Get": "Parameters.WindowHours"},
                    "--endpoint", endpoint_name, "--publish"]},
                "ProcessingInputs": inputs,
                "ProcessingOutputConfig": {"KmsKeyId": key_arn, "Outputs": [{
                    "OutputName": "monitor", "S3Output": {
                        "S3Uri": {"Std:Join": {"On": "", "Values": [
                            output_uri, {"Get": "Execution.PipelineExecutionId"}]}},
                        "LocalPath": "/opt/ml/processing/monitor",
                        "S3UploadMode": "EndOfJob"}}]},
                "ProcessingResources": {"ClusterConfig": {
                    "InstanceCount": 1, "InstanceType": INSTANCE_TYPE, "VolumeSizeInGB": 20,
                    **({"VolumeKmsKeyId": key} if key else {})}},
                "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                "RoleArn": role_arn, "NetworkConfig": network,
            },
        }
        definition = {"Version": "2020-12-01", "Metadata": {},
                      "Parameters": [{"Name": "WindowHours", "Type": "String",
                                      "DefaultValue": str(hours)}],
                      "Steps": [step]}
        name = f"{name_prefix}-monitor"
        self.pipeline = sagemaker.CfnPipeline(
            self, "Pipeline", pipeline_name=name, pipeline_display_name=name,
            pipeline_description=f"genkiln: health figures of {endpoint_name}",
            role_arn=pipeline_role.role_arn,
            pipeline_definition={"PipelineDefinitionBody": stack.to_json_string(definition)})
        pipeline_arn = stack.format_arn(service="sagemaker", resource="pipeline",
                                        resource_name=name)

        starter = iam.Role(self, "SchedulerRole",
                           assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
                           description=f"{name_prefix}: starts the endpoint monitor")
        starter.add_to_policy(iam.PolicyStatement(
            actions=["sagemaker:StartPipelineExecution"], resources=[pipeline_arn]))
        self.schedule = scheduler.CfnSchedule(
            self, "Schedule", name=name, schedule_expression=f"rate({hours} hours)",
            flexible_time_window=scheduler.CfnSchedule.FlexibleTimeWindowProperty(
                mode="OFF"),
            target=scheduler.CfnSchedule.TargetProperty(
                arn=pipeline_arn, role_arn=starter.role_arn,
                sage_maker_pipeline_parameters=scheduler.CfnSchedule
                .SageMakerPipelineParametersProperty(pipeline_parameter_list=[
                    scheduler.CfnSchedule.SageMakerPipelineParameterProperty(
                        name="WindowHours", value=str(hours))])))
        self.schedule.node.add_dependency(self.pipeline)

        self.alarms = {}
        for figure, (threshold, meaning) in ALARMS.items():
            alarm = cloudwatch.Metric(
                namespace="genkiln", metric_name=figure,
                dimensions_map={"EndpointName": endpoint_name}, statistic="Maximum",
                period=Duration.hours(min(hours, 24))).create_alarm(
                self, f"{figure.title().replace('_', '')}Alarm",
                alarm_name=f"{endpoint_name}-{figure}",
                alarm_description=f"{endpoint_name}: {meaning} (genkiln monitor)",
                threshold=threshold, evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
            alarm.add_alarm_action(actions.SnsAction(topic))
            self.alarms[figure] = alarm
