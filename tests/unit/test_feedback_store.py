"""The feedback store in S3 (moto stands in for S3 only) and the choice of store by env."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from inference.feedback_store import S3FeedbackStore, store_for
from inference.settings import ServingSettings
from training.feedback import FeedbackConflict, FeedbackRecord, GenerationRecord

BUCKET = "capture-bucket"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET,
                             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


@pytest.fixture
def key_arn(s3: Any) -> str:
    arn: str = boto3.client("kms", region_name="eu-west-1").create_key()["KeyMetadata"]["Arn"]
    return arn


def generation(generation_id: str = "gen-1", text: str = "hello") -> GenerationRecord:
    return GenerationRecord(generation_id=generation_id, family="transformer", kind="generate",
                            inputs="hi", parameters={"seed": 1}, output={"text": text})


def test_records_land_under_the_prefix_encrypted_with_the_key(s3: Any, key_arn: str) -> None:
    store = S3FeedbackStore(f"s3://{BUCKET}/feedback/", kms_key_id=key_arn, s3_client=s3)
    assert store.put(generation()) is True
    head = s3.head_object(Bucket=BUCKET, Key="feedback/generations/gen-1.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn
    record = store.get_generation("gen-1")
    assert record is not None and record.output == {"text": "hello"}
    assert store.get_generation("gen-2") is None


def test_a_retry_is_one_record_and_other_content_is_refused(s3: Any, key_arn: str) -> None:
    store = S3FeedbackStore(f"s3://{BUCKET}/feedback", kms_key_id=key_arn, s3_client=s3)
    judgement = FeedbackRecord(feedback_id="fb-1", generation_id="gen-1", rating=4)
    assert store.put(judgement) is True
    # A retry carries a new `created` time, and is still the same record.
    assert store.put(FeedbackRecord(feedback_id="fb-1", generation_id="gen-1", rating=4)) \
        is False
    with pytest.raises(FeedbackConflict, match="use a new id"):
        store.put(FeedbackRecord(feedback_id="fb-1", generation_id="gen-1", rating=2))
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="feedback/")["Contents"]
    assert [o["Key"] for o in listed] == ["feedback/feedback/fb-1.json"]
    stored = s3.get_object(Bucket=BUCKET, Key="feedback/feedback/fb-1.json")["Body"].read()
    assert b'"rating":4' in stored


def store_from_environment(environ: dict[str, str]) -> Any:
    return store_for(ServingSettings.from_env(environ).feedback)


def test_the_environment_picks_the_store(tmp_path: Path, s3: Any) -> None:
    assert store_from_environment({"GENKILN_FEEDBACK": "off",
                                   "GENKILN_FEEDBACK_DIR": str(tmp_path)}) is None
    local = store_from_environment({"GENKILN_FEEDBACK_DIR": str(tmp_path)})
    assert str(local) == str(tmp_path)
    remote = store_from_environment({"GENKILN_FEEDBACK_URI": f"s3://{BUCKET}/feedback/",
                                     "GENKILN_FEEDBACK_KMS_KEY_ID": "alias/k"})
    assert isinstance(remote, S3FeedbackStore)
    assert (remote.bucket, remote.prefix, remote.kms_key_id) == (BUCKET, "feedback/", "alias/k")
    with pytest.raises(ValueError, match="s3://bucket/prefix/"):
        store_from_environment({"GENKILN_FEEDBACK_URI": "feedback-bucket"})
