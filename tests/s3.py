"""Real S3 on loopback for tests: moto's standalone server, reached by s3fs as it would reach AWS.

Its fixtures reach every test module through `pytest_plugins` in conftest.py.
The server runs once per session on 127.0.0.1 with a free port; `AWS_ENDPOINT_URL` (read by
botocore, hence by s3fs/aiobotocore and boto3) points every S3 client at it, with dummy
credentials, so `s3://bucket/...` destinations work unchanged.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class S3Server:
    """A running moto server: its endpoint and a boto3 client for checks from the test side."""

    endpoint_url: str

    def client(self):  # a fresh boto3 client: safe to use from any thread
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=_ENV["AWS_DEFAULT_REGION"])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's ThreadedMotoServer on 127.0.0.1 (free port) with the AWS environment pointing at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = {name: os.environ.get(name) for name in [*_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(_ENV, AWS_ENDPOINT_URL=endpoint)
    _forget_s3_filesystems()
    try:
        yield S3Server(endpoint)
    finally:
        _forget_s3_filesystems()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket for one test; returns its name."""
    name = f"videos-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name)
    return name


def _forget_s3_filesystems() -> None:
    """Drop cached s3fs instances so none keeps an endpoint from before the environment changed."""
    try:
        import s3fs
    except ImportError:  # pragma: no cover - the s3 extra is part of the test environment
        return
    s3fs.S3FileSystem.clear_instance_cache()
