"""A real S3-compatible server on loopback (moto's, over HTTP) with IAM checks on, for the tests.

Credentials, region and endpoint reach medray through the standard AWS_* variables, as on a
cluster; the server checks signatures, so a wrong secret key is refused as S3 itself refuses it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

BUCKET = "medray-test"
# moto authenticates every request after this many: the three IAM calls that make our user.
SETUP_ACTIONS = 3


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    bucket: str
    env: dict[str, str]  # AWS_* variables of a user that may do anything in S3

    def uri(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def upload(self, local: Path, *parts: str) -> str:
        """A local file or folder copied under s3://bucket/<parts>; returns its URI."""
        from medray import storage

        filesystem, path = storage.resolve(self.uri(*parts))
        pafs.copy_files(str(local), path, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=filesystem)
        return self.uri(*parts)

    def listing(self, *parts: str) -> list[str]:
        """Keys under s3://bucket/<parts>, relative to it (none if nothing is there yet)."""
        from medray import storage

        prefix = self.uri(*parts)
        if storage.info(prefix, "listing").type == pafs.FileType.NotFound:
            return []
        return [location[len(prefix) + 1:] for location, _ in storage.list_files(prefix, "listing")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_object_store():
    """(server, ObjectStore): moto's threaded server, an IAM user with full S3 access, one bucket."""
    import boto3
    import moto.settings
    from moto.server import ThreadedMotoServer

    moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = SETUP_ACTIONS
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    anyone = {"endpoint_url": endpoint, "region_name": "us-east-1",
              "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
    iam = boto3.client("iam", **anyone)
    iam.create_user(UserName="medray")
    iam.put_user_policy(UserName="medray", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="medray")["AccessKey"]
    env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": endpoint}
    boto3.client("s3", **{**anyone, "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
                          "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}).create_bucket(Bucket=BUCKET)
    return server, ObjectStore(endpoint, BUCKET, env)
