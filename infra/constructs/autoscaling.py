"""Instance autoscaling of an endpoint variant."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from constructs import Construct

_SERVICE_LINKED_ROLE = ("aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
                        "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint")


class EndpointScaling(Construct):
    """Target tracking on load, with an optional night-time cap for non-production.

    Real-time endpoints track invocations per instance (per minute, SageMaker's own
    metric). Asynchronous endpoints track their queue instead (backlog per instance)
    and, when their floor is 0, a step policy starts the first instance as soon as a
    request waits with no capacity to run it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, endpoint_name: str,
                 variant_name: str, asynchronous: bool, min_instances: int,
                 max_instances: int, target_per_instance: int,
                 scale_down_at_night: bool) -> None:
        super().__init__(scope, construct_id)
        # Application Auto Scaling acts for SageMaker through its service-linked role
        # (created with the first scaling policy of the account); naming it keeps CDK
        # from adding a role of its own that nothing would use.
        service_linked_role = iam.Role.from_role_arn(
            self, "ServiceLinkedRole", Stack.of(self).format_arn(
                service="iam", region="", resource="role",
                resource_name=_SERVICE_LINKED_ROLE), mutable=False)
        self.target = appscaling.ScalableTarget(
            self, "Target",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{endpoint_name}/variant/{variant_name}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=min_instances,
            max_capacity=max_instances,
            role=service_linked_role,
        )
        # Scale out fast, scale in slowly: a model takes minutes to load on a new instance.
        scale_in, scale_out = Duration.minutes(5), Duration.minutes(1)
        if asynchronous:
            self.target.scale_to_track_metric(
                "Backlog", target_value=target_per_instance,
                scale_in_cooldown=scale_in, scale_out_cooldown=scale_out,
                custom_metric=cloudwatch.Metric(
                    namespace="AWS/SageMaker", metric_name="ApproximateBacklogSizePerInstance",
                    dimensions_map={"EndpointName": endpoint_name},
                    statistic="Average", period=Duration.minutes(1)))
            if min_instances == 0:
                self.target.scale_on_metric(
                    "StartFromZero",
                    metric=cloudwatch.Metric(
                        namespace="AWS/SageMaker", metric_name="HasBacklogWithoutCapacity",
                        dimensions_map={"EndpointName": endpoint_name},
                        statistic="Average", period=Duration.minutes(1)),
                    scaling_steps=[appscaling.ScalingInterval(upper=0.5, change=0),
                                   appscaling.ScalingInterval(lower=0.5, change=1)],
                    adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
                    cooldown=Duration.minutes(5))
        else:
            self.target.scale_to_track_metric(
                "Invocations", target_value=target_per_instance,
                scale_in_cooldown=scale_in, scale_out_cooldown=scale_out,
                predefined_metric=(appscaling.PredefinedMetric
                                   .SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE))

        # At night the ceiling drops to the floor, but never below one instance: an
        # asynchronous endpoint with a floor of 0 must still be able to start one.
        night_ceiling = max(1, min_instances)
        if scale_down_at_night and max_instances > night_ceiling:
            # Outside 07:00-19:00 UTC on weekdays the ceiling drops, so a forgotten dev
            # endpoint costs its minimum, not its maximum, overnight.
            self.target.scale_on_schedule(
                "NightCap", schedule=appscaling.Schedule.cron(
                    minute="0", hour="19", week_day="MON-FRI"),
                min_capacity=min_instances, max_capacity=night_ceiling)
            self.target.scale_on_schedule(
                "MorningRestore", schedule=appscaling.Schedule.cron(
                    minute="0", hour="7", week_day="MON-FRI"),
                min_capacity=min_instances, max_capacity=max_instances)
