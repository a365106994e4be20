"""The store's door methods that need no endpoint: telling a missing object from any other failure."""

from __future__ import annotations

import logging

import boto3
from botocore.exceptions import ClientError, EndpointConnectionError

from pgdr.store.s3 import BackupStore


def _store() -> BackupStore:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    return BackupStore(client=client, bucket="b", prefix="p", sse_args={}, part_size=8 << 20,
                       log=logging.getLogger("test"))


def test_missing_objects_and_versions_are_told_apart_from_outages():
    store = _store()
    for code in ("404", "NoSuchKey", "NoSuchVersion"):
        assert store.is_missing(ClientError({"Error": {"Code": code}}, "HeadObject"))
    assert not store.is_missing(ClientError({"Error": {"Code": "500"}}, "HeadObject"))
    assert not store.is_missing(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))


def test_an_error_whose_response_is_none_is_an_outage_not_a_crash():
    """A connection reset mid-request can leave ``response`` None: before, is_missing raised AttributeError,
    so one S3 outage alternated between two kinds of failure and alerted again and again."""

    class Reset(Exception):
        response = None

    assert not _store().is_missing(Reset("connection reset"))
