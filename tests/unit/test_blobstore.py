"""The file blob store (content addressing, atomic writes, URI checks) and `open_store`'s choice."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipeline import blobstore
from pipeline.blobstore import FileBlobStore, S3BlobStore, open_store
from pipeline.settings import BlobSettings
from tests.support.asserts import bad_input

pytestmark = pytest.mark.unit

PDF = b"%PDF-1.7\n" + bytes(range(256)) * 4


@pytest.fixture
def store(tmp_path: Path) -> FileBlobStore:
    return FileBlobStore(tmp_path / "blobs")


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


# --- content-addressed puts -----------------------------------------------------------------------


def test_put_then_get(store):
    uri = store.put(PDF)
    assert store.get(uri) == PDF
    assert store.exists(uri)


def test_put_stores_under_the_sha256(store):
    digest = hashlib.sha256(PDF).hexdigest()
    uri = store.put(PDF, suffix=".pdf")
    assert uri == (store.root / "sha256" / digest[:2] / f"{digest}.pdf").as_uri()


def test_put_of_the_same_bytes_is_one_file_written_once(store):
    uri = store.put(PDF)
    path = Path(urlparse(uri).path)
    inode = path.stat().st_ino  # a rewrite would rename a new file, with a new inode, into place
    assert store.put(PDF) == uri
    assert files_under(store.root) == [path]
    assert path.stat().st_ino == inode


def test_different_bytes_get_different_uris(store):
    assert store.put(b"a") != store.put(b"b")


def test_the_suffix_is_part_of_the_address(store):
    assert store.put(PDF, suffix=".pdf") != store.put(PDF)
    assert len(files_under(store.root)) == 2


def test_empty_bytes_are_a_blob(store):
    assert store.get(store.put(b"")) == b""


def test_put_file_gives_the_same_uri_as_put(store, tmp_path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(PDF)
    assert store.put_file(path, suffix=".pdf") == store.put(PDF, suffix=".pdf")
    assert len(files_under(store.root)) == 1


def test_put_file_streams_a_file_bigger_than_one_block(store, tmp_path):
    data = os.urandom(2 * blobstore._CHUNK + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    uri = store.put_file(path)
    assert store.get(uri) == data
    assert uri.endswith(hashlib.sha256(data).hexdigest())


def test_put_file_is_idempotent(store, tmp_path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(PDF)
    assert store.put_file(path) == store.put_file(path)
    assert len(files_under(store.root)) == 1


# --- named puts -----------------------------------------------------------------------------------


def test_put_as_stores_under_the_name_and_overwrites(store):
    uri = store.put_as("reports/run-1/eval.json", b'{"v": 1}')
    assert uri == (store.root / "reports/run-1/eval.json").as_uri()
    assert store.put_as("reports/run-1/eval.json", b'{"v": 2}') == uri
    assert store.get(uri) == b'{"v": 2}'


def test_put_as_normalises_redundant_separators(store):
    assert store.put_as("a//b/./c.txt", b"x") == store.uri("a/b/c.txt")


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "a/../../escape", "a/..", "", "."])
def test_put_as_refuses_names_outside_the_store(store, tmp_path, name):
    with pytest.raises(ValueError, match="blob name must be relative without '..'"):
        store.put_as(name, b"x")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("name", ["eval report.json", "100%.txt", "café.txt"])
def test_a_name_that_needs_quoting_can_be_read_back(store, name):
    uri = store.put_as(name, b"x")
    assert store.exists(uri)
    assert store.get(uri) == b"x"


def test_a_root_that_needs_quoting_works(tmp_path):
    store = FileBlobStore(tmp_path / "my blobs")
    assert store.get(store.put(PDF)) == PDF


# --- reads and URI checks -------------------------------------------------------------------------


def test_get_of_a_missing_blob_is_blob_missing(store):
    uri = store.uri("sha256/00/" + "0" * 64)
    error = bad_input(store.get, uri)
    assert error.reason == "blob_missing"
    assert str(error) == f"no blob at {uri}"
    assert not store.exists(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/hostname",
        "s3://bucket/sha256/ab/abc",
        "https://example.org/blob",
        "relative/path",
    ],
)
def test_a_uri_outside_the_store_is_bad_uri(store, uri):
    error = bad_input(store.get, uri)
    assert error.reason == "bad_uri"
    assert str(error) == f"{uri} is not in this store ({store.root.as_uri()})"
    assert bad_input(store.exists, uri).reason == "bad_uri"


def test_a_dot_dot_uri_cannot_leave_the_store(store):
    secret = store.root.parent / "secret.txt"
    secret.write_bytes(b"not a blob")
    assert bad_input(store.get, store.root.as_uri() + "/../secret.txt").reason == "bad_uri"


def test_a_sibling_directory_sharing_the_roots_name_is_outside(store):
    sibling = store.root.parent / (store.root.name + "-evil")
    sibling.mkdir()
    (sibling / "x").write_bytes(b"x")
    assert bad_input(store.get, (sibling / "x").as_uri()).reason == "bad_uri"


def test_another_store_reads_the_same_directory(store):
    uri = store.put(PDF)
    assert FileBlobStore(store.root).get(uri) == PDF


def test_get_of_a_directory_is_bad_input(store):
    store.put(PDF)
    assert bad_input(store.get, store.uri("sha256")).reason == "blob_missing"


# --- atomic writes --------------------------------------------------------------------------------


def test_writes_leave_no_temp_files(store, tmp_path):
    path = tmp_path / "paper.pdf"
    path.write_bytes(PDF)
    store.put(b"a")
    store.put_file(path)
    store.put_as("manifest.json", b"{}")
    assert temp_files(store.root) == []


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_write_failing_midway_leaves_nothing(store, error):
    def blocks() -> Iterator[bytes]:
        yield b"half of a "
        raise error

    with pytest.raises(type(error)):
        store._write("sha256/ab/partial", blocks())
    assert not (store.root / "sha256/ab/partial").exists()
    assert temp_files(store.root) == []


def test_a_failed_rename_leaves_nothing(store, monkeypatch):
    def no_rename(src: object, dst: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="rename failed"):
        store.put(PDF)
    assert files_under(store.root) == []


def test_a_failed_overwrite_keeps_the_old_blob_whole(store, monkeypatch):
    uri = store.put_as("manifest.json", b"old")

    def no_rename(src: object, dst: object) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        store.put_as("manifest.json", b"new and longer")
    assert store.get(uri) == b"old"
    assert temp_files(store.root) == []


def test_put_never_writes_outside_the_root(store, tmp_path):
    with pytest.raises(ValueError):
        store.put(b"x", suffix="/../../../../escaped")
    assert not (tmp_path / "escaped").exists()


# --- choosing a store -----------------------------------------------------------------------------


def test_open_store_takes_an_absolute_file_uri(tmp_path):
    store = open_store(BlobSettings(store_uri=(tmp_path / "abs").as_uri()))
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "abs"
    assert (tmp_path / "abs").is_dir()


def test_open_store_takes_file_with_a_relative_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(BlobSettings(store_uri="file://rel/blobs"))
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / "rel" / "blobs"


def test_open_store_default_is_under_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("BLOB_STORE_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    store = open_store(BlobSettings())
    assert isinstance(store, FileBlobStore)
    assert store.root == tmp_path / ".distillery" / "blobs"


def test_open_store_takes_an_s3_bucket_and_prefix():
    store = open_store(BlobSettings(store_uri="s3://bucket/some/prefix/"))
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("bucket", "some/prefix")
    assert store.uri("sha256/ab/abc") == "s3://bucket/some/prefix/sha256/ab/abc"


def test_an_s3_store_without_prefix_uses_the_bucket_root():
    store = open_store(BlobSettings(store_uri="s3://bucket"))
    assert isinstance(store, S3BlobStore)
    assert store.uri("k") == "s3://bucket/k"


@pytest.mark.parametrize("uri", ["s3://", "s3:///prefix"])
def test_open_store_refuses_s3_without_a_bucket(uri):
    with pytest.raises(ValueError, match=f"BLOB_STORE_URI '{uri}' has no bucket"):
        open_store(BlobSettings(store_uri=uri))


@pytest.mark.parametrize("uri", ["gs://bucket/x", "https://example.org/blobs", "/abs/dir", ""])
def test_open_store_refuses_other_schemes(uri):
    with pytest.raises(ValueError) as caught:
        open_store(BlobSettings(store_uri=uri))
    assert str(caught.value) == f"BLOB_STORE_URI {uri!r}: use file://DIR or s3://BUCKET/PREFIX"


def test_put_as_cannot_overwrite_a_content_addressed_blob(store):
    uri = store.put(b"original")
    name = uri.split("/blobs/", 1)[1]
    with pytest.raises(ValueError, match="content-addressed"):
        store.put_as(name, b"impostor")
    assert store.get(uri) == b"original"


def test_blobs_are_readable_by_other_users(store):
    uri = store.put(b"shared")
    assert store._path(uri).stat().st_mode & 0o044 == 0o044


# --- folders: names, files stored by name, trees --------------------------------------------------


def test_names_lists_a_folder_recursively_without_writes_in_progress(store):
    store.put_as("runs/a/pairs/2.json", b"2")
    store.put_as("runs/a/pairs/1.json", b"1")
    store.put_as("runs/a/state.json", b"{}")
    store.put_as("runs/b/state.json", b"{}")
    (store.root / "runs" / "a" / "pairs" / ".tmp-half").write_bytes(b"")
    assert store.names("runs/a") == [
        "runs/a/pairs/1.json",
        "runs/a/pairs/2.json",
        "runs/a/state.json",
    ]
    assert store.names("runs/a/pairs/") == ["runs/a/pairs/1.json", "runs/a/pairs/2.json"]
    assert store.names("runs/none") == []


def test_a_tree_goes_in_and_comes_back_whole(store, tmp_path):
    source = tmp_path / "adapter"
    (source / "nested").mkdir(parents=True)
    (source / "adapter_model.safetensors").write_bytes(PDF * 300)  # several read blocks
    (source / "nested" / "config.json").write_text("{}")
    uri = blobstore.put_tree(store, source, "checkpoints/c1/adapter")
    assert uri == store.uri("checkpoints/c1/adapter")
    assert Path(urlparse(uri).path).is_dir()  # a file store's folder URI is the directory itself
    copy = blobstore.get_tree(store, "checkpoints/c1/adapter", tmp_path / "copy")
    assert files_under(copy) == [copy / "adapter_model.safetensors", copy / "nested/config.json"]
    assert (copy / "adapter_model.safetensors").read_bytes() == PDF * 300
    assert temp_files(store.root) == []


def test_getting_a_missing_tree_is_blob_missing(store, tmp_path):
    assert (
        bad_input(blobstore.get_tree, store, "checkpoints/none", tmp_path).reason == "blob_missing"
    )


def test_a_uri_of_the_store_gives_back_its_name_and_one_elsewhere_is_refused(tmp_path):
    store = FileBlobStore(tmp_path / "blobs with spaces")  # as_uri() quotes them
    uri = blobstore.put_tree(store, _tree(tmp_path), "checkpoints/c 1/adapter")
    assert "%20" in uri
    assert blobstore.name_of(store, uri) == "checkpoints/c 1/adapter"
    assert blobstore.get_tree(store, blobstore.name_of(store, uri), tmp_path / "copy")
    other = FileBlobStore(tmp_path / "other").uri("checkpoints/c1")
    assert bad_input(blobstore.name_of, store, other).reason == "blob_elsewhere"


def _tree(root: Path) -> Path:
    (root / "tree").mkdir()
    (root / "tree" / "a.json").write_text("{}")
    return root / "tree"
