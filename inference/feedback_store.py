"""Where the server keeps generations and feedback: a local directory or an S3 prefix.

Both hold the layout of `training.feedback` (generations/<id>.json, feedback/<id>.json), so
a refinement job's `feedback` channel reads what the endpoint wrote. The environment picks:

    GENKILN_FEEDBACK=off            record nothing (feedback requests are refused)
    GENKILN_FEEDBACK_URI=s3://b/p/  the capture bucket's feedback/ prefix, SSE-KMS with
                                    GENKILN_FEEDBACK_KMS_KEY_ID (the key the infra creates)
    GENKILN_FEEDBACK_DIR=/path      a local directory
    (none of these)                 a local directory under the system's temp folder

S3 writes are conditional (`If-None-Match: *`), so of two writers of one id exactly one
creates the object, and a retry finds the first and compares contents, as the local
store does. An object appears whole or not at all, so a killed server leaves nothing
half-written there either.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Protocol

from inference.settings import GENKILN_FEEDBACK_URI, FeedbackSettings
from training.feedback import (
    GENERATIONS,
    FeedbackConflict,
    FeedbackRecord,
    GenerationRecord,
    LocalFeedbackStore,
    check_id,
    encode,
    generation_from_json,
    record_key,
    same_record,
)

log = logging.getLogger("genkiln.feedback")


class FeedbackStore(Protocol):
    def put(self, record: GenerationRecord | FeedbackRecord) -> bool: ...

    def get_generation(self, generation_id: str) -> GenerationRecord | None: ...


class S3FeedbackStore:
    """The store under an S3 prefix, encrypted with a KMS key."""

    def __init__(self, uri: str, *, kms_key_id: str | None = None, s3_client: Any = None
                 ) -> None:
        if not uri.startswith("s3://"):
            raise ValueError(f"{GENKILN_FEEDBACK_URI} must look like "
                             f"s3://bucket/prefix/; got {uri!r}")
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{GENKILN_FEEDBACK_URI} names no bucket: {uri!r}")
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.kms_key_id = kms_key_id
        if s3_client is None:
            import boto3

            s3_client = boto3.client("s3")
        self.s3 = s3_client

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _get(self, key: str) -> bytes | None:
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except self.s3.exceptions.NoSuchKey:
            return None
        body: bytes = answer["Body"].read()
        return body

    def put(self, record: GenerationRecord | FeedbackRecord) -> bool:
        """Store `record`; False when the same record was already there (a retry)."""
        key = record_key(record)
        body = encode(record)
        extra: dict[str, Any] = {"ServerSideEncryption": "aws:kms"}
        if self.kms_key_id:
            extra["SSEKMSKeyId"] = self.kms_key_id
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=body,
                               ContentType="application/json", IfNoneMatch="*", **extra)
            return True
        except self.s3.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            # 412: the object exists; 409: a concurrent conditional write of the same key.
            if code not in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise
        stored = self._get(key)
        if stored is not None and same_record(stored, body):
            return False
        raise FeedbackConflict(f"{key} already holds a different record; use a new id")

    def get_generation(self, generation_id: str) -> GenerationRecord | None:
        stored = self._get(f"{GENERATIONS}/{check_id(generation_id, 'generation_id')}.json")
        return None if stored is None else generation_from_json(json.loads(stored))


class DescribedLocalStore(LocalFeedbackStore):
    """The local store, with its folder as its description (for /info and the log)."""

    def __str__(self) -> str:
        return str(self.root)


def store_for(settings: FeedbackSettings) -> FeedbackStore | None:
    """The store the settings ask for, or None when capture is off."""
    if not settings.enabled:
        return None
    if settings.uri:
        return S3FeedbackStore(settings.uri, kms_key_id=settings.kms_key_id or None)
    root = Path(settings.directory) if settings.directory \
        else Path(tempfile.gettempdir()) / "genkiln-feedback"
    return DescribedLocalStore(root)
