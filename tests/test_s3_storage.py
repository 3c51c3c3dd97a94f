"""Videos into real S3 (moto's server on loopback) through the Prefect engine: verified, atomic."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest

from prefect_comet import KlingOmniVideoRequest, KlingWatermark, OmniVideoRequest, generate_video
from prefect_comet.testing.emulator import CometEmulator
from tests.conftest import API_KEY, FAST
from tests.s3 import S3Server

pytest.importorskip("s3fs")


def _object(server: S3Server, bucket: str, key: str) -> bytes:
    return server.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _keys(server: S3Server, bucket: str, prefix: str = "") -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


@pytest.mark.parametrize("provider", ["omni", "kling"])
async def test_generate_video_into_s3(emulator, credentials, s3_server, s3_bucket, provider):
    if provider == "omni":
        request = OmniVideoRequest(prompt="Waves into S3")
        emulator.add_fault("omni.content", "truncate", times=2)  # resumed with Range into the S3 upload
    else:
        request = KlingOmniVideoRequest(
            prompt="A boat into S3", aspect_ratio="16:9", watermark_info=KlingWatermark(enabled=True)
        )
    destination = f"s3://{s3_bucket}/videos"

    stored = await generate_video(
        request, destination=destination, credentials=credentials, idempotency_key=f"s3-{provider}", **FAST
    )

    task_id = stored.task_id
    assert stored.uri == f"{destination}/{task_id}.mp4"
    body = _object(s3_server, s3_bucket, f"videos/{task_id}.mp4")
    assert hashlib.sha256(body).hexdigest() == stored.sha256 == emulator.sha256(task_id)
    assert len(body) == stored.size_bytes
    sidecar = json.loads(_object(s3_server, s3_bucket, f"videos/{task_id}.json"))
    assert stored.metadata_uri == f"{destination}/{task_id}.json"
    assert sidecar["task_id"] == task_id and sidecar["videos"][0]["sha256"] == stored.sha256
    expected = {f"videos/{task_id}.mp4", f"videos/{task_id}.json"}
    if provider == "kling":
        (copy,) = stored.extras
        assert copy.uri == f"{destination}/{task_id}-watermarked.mp4"
        watermarked = _object(s3_server, s3_bucket, f"videos/{task_id}-watermarked.mp4")
        assert hashlib.sha256(watermarked).hexdigest() == emulator.sha256(task_id, watermarked=True)
        expected.add(f"videos/{task_id}-watermarked.mp4")
    keys = _keys(s3_server, s3_bucket)
    ledger = [key for key in keys if key.startswith("videos/.comet-ledger/")]
    assert expected <= set(keys)
    assert not [key for key in keys if "partial" in key]  # no partial object left behind
    assert all(key.endswith(".jpg") for key in set(keys) - set(ledger) - expected)  # posters only
    assert len(ledger) == 1 and json.loads(_object(s3_server, s3_bucket, ledger[0]))["state"] == "stored"
    assert API_KEY.encode() not in json.dumps(sidecar).encode()

    # The ledger in S3 answers a second run with the same key: no API call at all.
    requests_before = len(emulator.requests)
    again = await generate_video(
        request, destination=destination, credentials=credentials, idempotency_key=f"s3-{provider}", **FAST
    )
    assert again.model_dump() == stored.model_dump()
    assert len(emulator.requests) == requests_before and len(emulator.jobs) == 1


async def test_the_object_appears_only_complete(credentials, s3_server, s3_bucket):
    """A reader polling S3 during a slow download sees the final key absent, then whole."""
    with CometEmulator(api_key=API_KEY, latency=0.2, pad_to_bytes=3 << 20) as emu:
        emu.add_fault("omni.content", "slow", delay=0.04, chunk_size=128 << 10)  # ~1 s for 3 MiB
        seen: list[tuple[float, str, str]] = []  # (time, key, what)
        stop = threading.Event()

        def watch() -> None:
            client = s3_server.client()
            while not stop.is_set():
                now = time.time()
                listing = client.list_objects_v2(Bucket=s3_bucket, Prefix="videos/")
                finals = [
                    item["Key"] for item in listing.get("Contents", [])
                    if item["Key"].endswith(".mp4") and "/." not in item["Key"]
                ]
                for task_id in list(emu.jobs):
                    key = f"videos/{task_id}.mp4"
                    if key not in finals:
                        seen.append((now, key, "absent"))
                for key in finals:
                    task_id = key.rsplit("/", 1)[1].removesuffix(".mp4")
                    data = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
                    whole = hashlib.sha256(data).hexdigest() == emu.sha256(task_id)
                    seen.append((now, key, "complete" if whole else f"PARTIAL {len(data)} bytes"))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            stored = await generate_video(
                OmniVideoRequest(prompt="Slow waves"), destination=f"s3://{s3_bucket}/videos",
                credentials=credentials.model_copy(update={"base_url": emu.base_url}),
                idempotency_key="slow-s3", **FAST,
            )
            time.sleep(0.2)  # let the watcher look at the finished object a few times
        finally:
            stop.set()
            watcher.join(timeout=10)
        download = next(r for r in emu.requests if r.route == "omni.content")

    assert stored.size_bytes >= 3 << 20
    assert not [entry for entry in seen if entry[2].startswith("PARTIAL")], seen
    during = [entry for entry in seen if download.time <= entry[0] and entry[2] == "absent"]
    assert len(during) >= 5  # the reader really looked while the bytes were arriving
    assert seen[-1][2] == "complete"
    assert {what for _, _, what in seen} == {"absent", "complete"}
