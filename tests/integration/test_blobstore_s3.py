"""The S3 blob store against a real S3 API (moto's server on loopback), through open_store."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from pipeline.blobstore import S3BlobStore, get_tree, open_store, put_tree
from pipeline.settings import BlobSettings
from tests.support.asserts import bad_input

pytestmark = pytest.mark.integration

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """An S3 API on a free loopback port, for this module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CREDENTIALS.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        try:
            yield f"http://{host}:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3(endpoint: str) -> Any:
    """A plain boto3 client: the test's own view of the bucket, independent of s3fs."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # noqa: S106 - moto's fixed test credentials
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def settings_for(endpoint: str, store_uri: str) -> BlobSettings:
    return BlobSettings(
        store_uri=store_uri,
        s3_endpoint_url=endpoint,
        s3_access_key_id="testing",
        s3_secret_access_key=SecretStr("testing"),
    )


@pytest.fixture
def store(endpoint: str, bucket: str) -> S3BlobStore:
    store = open_store(settings_for(endpoint, f"s3://{bucket}/prefix"))
    assert isinstance(store, S3BlobStore)
    return store


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_put_then_get(store):
    uri = store.put(PDF)
    assert store.get(uri) == PDF
    assert store.exists(uri)


def test_put_stores_under_prefix_and_sha256(store, s3, bucket):
    digest = hashlib.sha256(PDF).hexdigest()
    uri = store.put(PDF, suffix=".pdf")
    assert uri == f"s3://{bucket}/prefix/sha256/{digest[:2]}/{digest}.pdf"
    assert keys(s3, bucket) == [f"prefix/sha256/{digest[:2]}/{digest}.pdf"]
    assert s3.get_object(Bucket=bucket, Key=keys(s3, bucket)[0])["Body"].read() == PDF


def test_put_of_the_same_bytes_is_one_object(store, s3, bucket):
    assert store.put(PDF) == store.put(PDF)
    assert len(keys(s3, bucket)) == 1


def test_put_file_gives_the_same_uri_as_put(store, s3, bucket, tmp_path: Path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(PDF)
    uri = store.put_file(path, suffix=".pdf")
    assert uri == store.put(PDF, suffix=".pdf")
    assert store.put_file(path, suffix=".pdf") == uri
    assert len(keys(s3, bucket)) == 1
    assert store.get(uri) == PDF


def test_put_as_stores_under_the_name_and_overwrites(store, s3, bucket):
    uri = store.put_as("reports/run-1/eval.json", b'{"v": 1}')
    assert uri == f"s3://{bucket}/prefix/reports/run-1/eval.json"
    assert store.put_as("reports/run-1/eval.json", b'{"v": 2}') == uri
    assert store.get(uri) == b'{"v": 2}'
    assert keys(s3, bucket) == ["prefix/reports/run-1/eval.json"]


@pytest.mark.parametrize("name", ["/abs", "../other-prefix/x", ""])
def test_put_as_refuses_names_outside_the_prefix(store, s3, bucket, name):
    with pytest.raises(ValueError, match="blob name must be relative"):
        store.put_as(name, b"x")
    assert keys(s3, bucket) == []


def test_get_of_a_missing_blob_is_blob_missing(store):
    uri = store.uri("sha256/00/" + "0" * 64)
    error = bad_input(store.get, uri)
    assert error.reason == "blob_missing"
    assert str(error) == f"no blob at {uri}"
    assert not store.exists(uri)


@pytest.mark.parametrize(
    "foreign",
    ["s3://other-bucket/prefix/x", "s3://{bucket}/prefix2/x", "s3://{bucket}/x", "file:///x"],
)
def test_a_uri_outside_the_store_is_bad_uri(store, bucket, foreign):
    uri = foreign.format(bucket=bucket)
    error = bad_input(store.get, uri)
    assert error.reason == "bad_uri"
    assert str(error) == f"{uri} is not in this store (s3://{bucket}/prefix/)"
    assert bad_input(store.exists, uri).reason == "bad_uri"


def test_a_store_without_prefix_uses_the_bucket_root(endpoint, s3, bucket):
    store = open_store(settings_for(endpoint, f"s3://{bucket}"))
    uri = store.put_as("manifest.json", b"{}")
    assert uri == f"s3://{bucket}/manifest.json"
    assert keys(s3, bucket) == ["manifest.json"]


def test_a_blob_written_by_another_client_is_seen(store, s3, bucket):
    uri = store.uri("reports/late.json")
    assert not store.exists(uri)
    s3.put_object(Bucket=bucket, Key="prefix/reports/late.json", Body=b"late")
    assert store.exists(uri)
    assert store.get(uri) == b"late"


def _list_in_the_same_process(endpoint: str, store: S3BlobStore, path: str) -> None:
    """A listing through the store's own filesystem (a trainer listing its datasets, say)."""
    store.fs.ls(path)


def test_a_blob_written_elsewhere_after_a_listing_is_seen(endpoint, store, s3, bucket):
    store.put_as("reports/first.json", b"1")
    _list_in_the_same_process(endpoint, store, f"{bucket}/prefix/reports")
    s3.put_object(Bucket=bucket, Key="prefix/reports/second.json", Body=b"2")
    uri = store.uri("reports/second.json")
    assert store.get(uri) == b"2"  # today: BadInput blob_missing, so the message is dead-lettered
    assert store.exists(uri)


def test_a_blob_deleted_elsewhere_after_a_listing_is_gone(endpoint, store, s3, bucket):
    uri = store.put_as("reports/first.json", b"1")
    _list_in_the_same_process(endpoint, store, f"{bucket}/prefix/reports")
    s3.delete_object(Bucket=bucket, Key="prefix/reports/first.json")
    assert not store.exists(uri)


def test_names_and_trees(store, s3, bucket, tmp_path: Path):
    source = tmp_path / "adapter"
    (source / "nested").mkdir(parents=True)
    (source / "adapter_model.safetensors").write_bytes(PDF)
    (source / "nested" / "config.json").write_text("{}")
    uri = put_tree(store, source, "checkpoints/c1/adapter")
    assert uri == f"s3://{bucket}/prefix/checkpoints/c1/adapter"
    assert store.names("checkpoints/c1") == [
        "checkpoints/c1/adapter/adapter_model.safetensors",
        "checkpoints/c1/adapter/nested/config.json",
    ]
    assert store.names("checkpoints/c2") == []
    copy = get_tree(store, "checkpoints/c1/adapter", tmp_path / "copy")
    assert (copy / "adapter_model.safetensors").read_bytes() == PDF
    assert (copy / "nested" / "config.json").read_text() == "{}"
