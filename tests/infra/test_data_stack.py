"""Data stack: a rotating customer key and four private, versioned, TLS-only buckets."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import INSTALL_HINT, Assembly

Match = pytest.importorskip("aws_cdk.assertions", reason=INSTALL_HINT).Match


def buckets(template: Any) -> dict[str, dict[str, Any]]:
    return template.find_resources("AWS::S3::Bucket")


def test_the_key_rotates_and_is_customer_managed(data_template: Any) -> None:
    data_template.resource_count_is("AWS::KMS::Key", 1)
    data_template.has_resource_properties("AWS::KMS::Key", {
        "EnableKeyRotation": True, "PendingWindowInDays": 7})
    data_template.has_resource_properties("AWS::KMS::Alias", {
        "AliasName": "alias/genkiln/genkiln-dev-data"})


def test_four_buckets_all_private_versioned_and_expiring_old_versions(
        data_template: Any) -> None:
    data_template.resource_count_is("AWS::S3::Bucket", 4)
    for bucket in buckets(data_template).values():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True,
            "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any(r.get("NoncurrentVersionExpiration") == {"NoncurrentDays": 30}
                   for r in rules)


def test_three_buckets_use_the_project_key_and_log_to_the_fourth(data_template: Any) -> None:
    all_buckets = buckets(data_template)
    key_ids = list(data_template.find_resources("AWS::KMS::Key"))
    kms_encrypted = [
        name for name, b in all_buckets.items()
        if b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        ["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": {"Fn::GetAtt": [key_ids[0], "Arn"]}}
    ]
    assert len(kms_encrypted) == 3
    (log_bucket,) = set(all_buckets) - set(kms_encrypted)
    # S3 log delivery only writes to SSE-S3 buckets.
    assert all_buckets[log_bucket]["Properties"]["BucketEncryption"][
        "ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"}
    for name in kms_encrypted:
        logging = all_buckets[name]["Properties"]["LoggingConfiguration"]
        assert logging["DestinationBucketName"] == {"Ref": log_bucket}


def test_every_bucket_refuses_plain_http(data_template: Any) -> None:
    data_template.resource_count_is("AWS::S3::BucketPolicy", 4)
    data_template.all_resources_properties("AWS::S3::BucketPolicy", {
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny", "Action": "s3:*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            "Principal": {"AWS": "*"}})])}})


def test_dev_resources_are_removed_with_the_stack(data_template: Any) -> None:
    for kind in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in data_template.find_resources(kind).values():
            assert resource["DeletionPolicy"] == "Delete"


def test_prod_resources_survive_the_stack(prod: Assembly) -> None:
    template = prod.template("data")
    for kind in ("AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in template.find_resources(kind).values():
            assert resource["DeletionPolicy"] == "Retain"
    template.has_resource_properties("AWS::KMS::Key", {"PendingWindowInDays": 30})


def test_what_endpoints_capture_expires(data_template: Any) -> None:
    data_template.has_resource_properties("AWS::S3::Bucket", {
        "LifecycleConfiguration": {"Rules": Match.array_with([
            Match.object_like({"Prefix": "capture/", "ExpirationInDays": 90,
                               "Status": "Enabled"}),
            Match.object_like({"Prefix": "feedback/", "ExpirationInDays": 365}),
            Match.object_like({"Prefix": "async-requests/", "ExpirationInDays": 7})])}})
