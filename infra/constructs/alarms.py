"""CloudWatch alarms on an endpoint, sent to an encrypted SNS topic."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


class EndpointAlarms(Construct):
    """Server errors, slow model, and an endpoint with no instance reporting.

    Attributes: `topic`, `server_errors`, `latency`, `no_instances` (the alarms), named
    `<endpoint>-<what>` so an endpoint's deployment configuration can name the one that
    rolls an update back (`server_errors_name`) before the alarms exist.
    """

    @staticmethod
    def name(endpoint_name: str, what: str) -> str:
        return f"{endpoint_name}-{what}"

    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str,
                 variant_name: str, key: kms.IKey, latency_ms: int, alarm_email: str,
                 instance_backed: bool) -> None:
        super().__init__(scope, construct_id)
        self._endpoint_name = endpoint_name
        self.topic = sns.Topic(self, "Topic", display_name=f"{endpoint_name} alarms",
                               master_key=key, enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        dims = {"EndpointName": endpoint_name, "VariantName": variant_name}
        minute = Duration.minutes(1)

        self.server_errors = self._alarm(
            "ServerErrors", description="The model container answered with 5xx errors",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker",
                                     metric_name="Invocation5XXErrors", dimensions_map=dims,
                                     statistic="Sum", period=minute),
            threshold=1, periods=5, datapoints=3,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING)
        # ModelLatency is reported in microseconds.
        self.latency = self._alarm(
            "ModelLatency", description=f"Average model latency above {latency_ms} ms",
            metric=cloudwatch.Metric(namespace="AWS/SageMaker", metric_name="ModelLatency",
                                     dimensions_map=dims, statistic="Average", period=minute),
            threshold=latency_ms * 1000, periods=5, datapoints=3,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            missing=cloudwatch.TreatMissingData.NOT_BREACHING)
        # Every healthy instance reports CPUUtilization each minute; when none does for
        # five minutes the endpoint has no healthy instance (missing data breaches).
        self.no_instances = None
        if instance_backed:
            self.no_instances = self._alarm(
                "NoHealthyInstances", description="No endpoint instance reported for 5 min",
                metric=cloudwatch.Metric(namespace="/aws/sagemaker/Endpoints",
                                         metric_name="CPUUtilization", dimensions_map=dims,
                                         statistic="SampleCount", period=minute),
                threshold=1, periods=5, datapoints=5,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                missing=cloudwatch.TreatMissingData.BREACHING)

    def _alarm(self, construct_id: str, *, description: str, metric: cloudwatch.Metric,
               threshold: float, periods: int, datapoints: int,
               comparison: cloudwatch.ComparisonOperator,
               missing: cloudwatch.TreatMissingData) -> cloudwatch.Alarm:
        alarm = metric.create_alarm(
            self, construct_id, alarm_name=self.name(self._endpoint_name, construct_id),
            alarm_description=description, threshold=threshold,
            evaluation_periods=periods, datapoints_to_alarm=datapoints,
            comparison_operator=comparison, treat_missing_data=missing)
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        alarm.add_ok_action(actions.SnsAction(self.topic))
        return alarm
