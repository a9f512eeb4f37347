"""The S3 side of the local stack: the bucket MLflow writes artifacts to."""

from __future__ import annotations

import boto3
from botocore.exceptions import ClientError


def ensure_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
    )
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
