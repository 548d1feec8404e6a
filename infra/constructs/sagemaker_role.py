"""IAM roles that SageMaker assumes, built from explicit least-privilege statements.

No AWS-managed policy (AmazonSageMakerFullAccess grants every SageMaker action on every
resource) and no `grant_*` helper that expands to wildcard actions such as
`s3:GetObject*` or `kms:GenerateDataKey*`: every action is named, and every resource is
a bucket prefix, a key, a repository or a name pattern owned by this project.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import acknowledge, resource_text

_S3_READ = ["s3:GetObject", "s3:GetObjectVersion"]
_S3_WRITE = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
_KMS_USE = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
_ECR_PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
             "ecr:BatchCheckLayerAvailability"]


class SageMakerRole(Construct):
    """A role for `sagemaker.amazonaws.com` with methods that add scoped statements.

    The stack wires it: `role.allow_read(bucket, prefix=...)` and friends. Findings
    that cannot be avoided (AWS APIs that take no resource ARN, object keys under a
    prefix) are acknowledged next to the statement that causes them.
    """

    def __init__(self, scope: Construct, construct_id: str, *, description: str) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self, "Role",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=description,
        )
        self._stack = Stack.of(self)
        self._acknowledged: set[str] = set()

    @property
    def role_arn(self) -> str:
        return self.role.role_arn

    def _allow(self, *, actions: list[str], resources: list[str],
               conditions: dict | None = None) -> None:
        self.role.add_to_principal_policy(iam.PolicyStatement(
            actions=actions, resources=resources, conditions=conditions))

    def _acknowledge_wildcard(self, finding: str, reason: str) -> None:
        if finding not in self._acknowledged:  # read and write may share a prefix
            self._acknowledged.add(finding)
            acknowledge(self.role, rule=f"AwsSolutions-IAM5[{finding}]", reason=reason)

    def allow_read(self, bucket: s3.IBucket, *, prefix: str) -> None:
        """Read objects under `prefix` and list only that prefix."""
        bucket_arn = self._bucket_arn(bucket)
        self._allow(actions=["s3:ListBucket"], resources=[bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}})
        self._allow(actions=_S3_READ, resources=[f"{bucket_arn}/{prefix}*"])
        self._acknowledge_objects(bucket_arn, prefix)

    def allow_write(self, bucket: s3.IBucket, *, prefix: str) -> None:
        """Write (never delete) objects under `prefix`."""
        bucket_arn = self._bucket_arn(bucket)
        self._allow(actions=_S3_WRITE, resources=[f"{bucket_arn}/{prefix}*"])
        self._acknowledge_objects(bucket_arn, prefix)

    def _bucket_arn(self, bucket: s3.IBucket) -> str:
        # A bucket from another stack is referenced through that stack's export. Taking
        # the import explicitly (the same export CDK would make) gives a value whose
        # text is known now, which the acknowledgment below has to quote.
        owner = Stack.of(bucket)
        if owner.node.path == self._stack.node.path:
            return bucket.bucket_arn
        return owner.export_value(bucket.bucket_arn)

    def _acknowledge_objects(self, bucket_arn: str, prefix: str) -> None:
        self._acknowledge_wildcard(
            f"Resource::{resource_text(self._stack, bucket_arn)}/{prefix}*",
            f"Object keys under {prefix} are created at run time (data files, job "
            "outputs, captured requests), so only a prefix can match them; the "
            "statement is limited to that prefix of a bucket this project owns.")

    def allow_key_use(self, key: kms.IKey) -> None:
        """Encrypt and decrypt with the project key (S3 objects, volumes, capture), and
        let SageMaker create grants on it for the volumes it attaches (only for AWS
        resources: kms:GrantIsForAWSResource)."""
        self._allow(actions=_KMS_USE, resources=[key.key_arn])
        self._allow(actions=["kms:CreateGrant"], resources=[key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}})

    def allow_image_pull(self, repository: ecr.IRepository) -> None:
        """Pull the project image; the registry token API takes no resource ARN."""
        self._allow(actions=_ECR_PULL, resources=[repository.repository_arn])
        self._allow(actions=["ecr:GetAuthorizationToken"], resources=["*"])
        self._acknowledge_wildcard(
            "Resource::*",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and the EC2 Describe calls "
            "of VPC jobs accept no resource ARN (IAM requires '*'); PutMetricData is "
            "limited to SageMaker namespaces by a condition.")

    def allow_job_logs(self) -> None:
        """Write job and endpoint logs and metrics, only in SageMaker's log groups."""
        log_groups = self._stack.format_arn(
            service="logs", resource="log-group", resource_name="/aws/sagemaker/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME)  # log-group:/aws/...
        self._allow(actions=["logs:CreateLogGroup", "logs:CreateLogStream",
                             "logs:PutLogEvents", "logs:DescribeLogStreams"],
                    resources=[log_groups, f"{log_groups}:log-stream:*"])
        self._allow(actions=["cloudwatch:PutMetricData"], resources=["*"],
                    conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*"]}})
        for finding in (f"Resource::{resource_text(self._stack, log_groups)}",
                        f"Resource::{resource_text(self._stack, log_groups)}"
                        ":log-stream:*"):
            self._acknowledge_wildcard(
                finding,
                "SageMaker names a log group per job type under /aws/sagemaker/ and a "
                "stream per job and instance, so names are only known at run time.")

    def allow_metrics(self, *, namespace: str) -> None:
        """Publish CloudWatch metrics under ``namespace`` (and nowhere else)."""
        self._allow(actions=["cloudwatch:PutMetricData"], resources=["*"],
                    conditions={"StringEquals": {"cloudwatch:namespace": namespace}})

    def allow_vpc_access(self, *, vpc_id: str, subnet_ids: list[str],
                         security_group_ids: list[str]) -> None:
        """Let SageMaker attach jobs and endpoints to the project's private subnets:
        network interfaces in that VPC, on those subnets and security groups only. The
        Describe calls take no resource ARN (IAM requires '*')."""
        stack = self._stack
        interfaces = stack.format_arn(service="ec2", resource="network-interface",
                                      resource_name="*")
        in_vpc = {"ArnEquals": {"ec2:Vpc": stack.format_arn(
            service="ec2", resource="vpc", resource_name=vpc_id)}}
        self._allow(actions=["ec2:CreateNetworkInterface"], resources=[
            *(stack.format_arn(service="ec2", resource="subnet", resource_name=s)
              for s in subnet_ids),
            *(stack.format_arn(service="ec2", resource="security-group", resource_name=g)
              for g in security_group_ids)])
        self._allow(actions=["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission",
                             "ec2:DeleteNetworkInterface",
                             "ec2:DeleteNetworkInterfacePermission"],
                    resources=[interfaces], conditions=in_vpc)
        self._allow(
            actions=["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs",
                     "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets",
                     "ec2:DescribeSecurityGroups"],
            resources=["*"])
        self._acknowledge_wildcard(
            f"Resource::{resource_text(stack, interfaces)}",
            "SageMaker creates one network interface per job host or endpoint instance, "
            "named at run time; the statement admits only interfaces in the project's VPC.")
        self._acknowledge_wildcard(
            "Resource::*",
            "ecr:GetAuthorizationToken, cloudwatch:PutMetricData and the EC2 Describe calls "
            "of VPC jobs accept no resource ARN (IAM requires '*'); PutMetricData is "
            "limited to SageMaker namespaces by a condition.")

    def allow_pass_to_sagemaker(self, role: iam.IRole) -> None:
        """Hand `role` to the jobs this role starts, and to no other service."""
        self._allow(actions=["iam:PassRole"], resources=[role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService":
                                                 "sagemaker.amazonaws.com"}})

    def allow_experiments(self, *, pipeline_name: str) -> None:
        """What a pipeline's experiment configuration makes SageMaker do as this role: an
        experiment named after the pipeline, a trial per execution, trial components
        for its jobs."""
        stack = self._stack
        resources = [
            stack.format_arn(service="sagemaker", resource="experiment",
                             resource_name=pipeline_name.lower()),
            stack.format_arn(service="sagemaker", resource="experiment-trial",
                             resource_name="*"),
            stack.format_arn(service="sagemaker", resource="experiment-trial-component",
                             resource_name="*"),
        ]
        self._allow(actions=["sagemaker:CreateExperiment", "sagemaker:DescribeExperiment",
                             "sagemaker:CreateTrial", "sagemaker:DescribeTrial",
                             "sagemaker:CreateTrialComponent",
                             "sagemaker:DescribeTrialComponent",
                             "sagemaker:UpdateTrialComponent",
                             "sagemaker:AssociateTrialComponent", "sagemaker:AddTags"],
                    resources=resources)
        for arn in resources[1:]:
            self._acknowledge_wildcard(
                f"Resource::{resource_text(stack, arn)}",
                "SageMaker Pipelines names a trial per execution and a trial component "
                "per job at run time; the experiment itself is named after the pipeline.")

    def allow_pipeline_steps(self, *, model_package_group: str) -> None:
        """Start, watch and stop the jobs of a pipeline run; register into one group."""
        jobs = []
        for kind in ("training-job", "processing-job"):
            # SageMaker Pipelines names every job it starts "pipelines-<id>-<step>-...".
            jobs.append(self._stack.format_arn(
                service="sagemaker", resource=kind, resource_name="pipelines-*"))
        self._allow(actions=["sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
                             "sagemaker:StopTrainingJob", "sagemaker:CreateProcessingJob",
                             "sagemaker:DescribeProcessingJob", "sagemaker:StopProcessingJob",
                             "sagemaker:AddTags"],
                    resources=jobs)
        group_arn = self._stack.format_arn(service="sagemaker", resource="model-package-group",
                                           resource_name=model_package_group)
        packages = self._stack.format_arn(service="sagemaker", resource="model-package",
                                          resource_name=f"{model_package_group}/*")
        self._allow(actions=["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage",
                             "sagemaker:AddTags"],
                    resources=[group_arn, packages])
        for arn in (*jobs, packages):
            self._acknowledge_wildcard(
                f"Resource::{resource_text(self._stack, arn)}",
                "Pipelines name each job and model package version at run time; the "
                "pattern admits only jobs started by a pipeline and versions in this "
                "project's model package group.")

