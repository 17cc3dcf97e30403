"""Where big payloads live (PDFs, datasets, adapters); messages carry only their URIs.

Two implementations of one Protocol: `file://` (the default; writes are atomic, a reader never
sees half a file) and `s3://` through s3fs (MinIO in compose and k8s). `put` is
content-addressed, so storing the same bytes twice is one object and a replay costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from pipeline.errors import BadInput
from pipeline.settings import BlobSettings

_CHUNK = 1 << 20


class BlobStore(Protocol):
    def put(self, data: bytes, *, suffix: str = "") -> str:
        """Store `data` under its sha256; returns its URI. Idempotent."""
        ...

    def put_file(self, path: Path, *, suffix: str = "") -> str:
        """Like `put`, streaming from a local file (PDFs, archives)."""
        ...

    def put_as(self, name: str, data: bytes) -> str:
        """Store `data` under a chosen relative name (manifests, reports); overwrites."""
        ...

    def put_file_as(self, name: str, path: Path) -> str:
        """Like `put_as`, streaming from a local file (adapters, model weights)."""
        ...

    def get(self, uri: str) -> bytes: ...

    def names(self, folder: str) -> list[str]:
        """The names (as given to `put_as`) of every blob under `folder`, sorted."""
        ...

    def exists(self, uri: str) -> bool: ...

    def uri(self, key: str) -> str:
        """The URI that a relative name (as given to `put_as`) has in this store."""
        ...


_SUFFIX = re.compile(r"^(\.[A-Za-z0-9_-]+)*$")
_CONTENT_DIR = "sha256"


def _content_key(digest: str, suffix: str) -> str:
    if not _SUFFIX.match(suffix):
        raise ValueError(f"blob suffix must look like '.pdf' or '.tar.gz': {suffix!r}")
    return f"{_CONTENT_DIR}/{digest[:2]}/{digest}{suffix}"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(name: str) -> str:
    parts = Path(name).parts
    if not parts or Path(name).is_absolute() or ".." in parts:
        raise ValueError(f"blob name must be relative without '..': {name!r}")
    if parts[0] == _CONTENT_DIR:
        raise ValueError(f"{_CONTENT_DIR}/ is content-addressed; use put(), not put_as({name!r})")
    return "/".join(parts)


class FileBlobStore:
    """Blobs under a local directory; each write goes to a temp file, fsync, then rename."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def put(self, data: bytes, *, suffix: str = "") -> str:
        key = _content_key(hashlib.sha256(data).hexdigest(), suffix)
        if not (self.root / key).exists():
            self._write(key, [data])
        return self.uri(key)

    def put_file(self, path: Path, *, suffix: str = "") -> str:
        key = _content_key(_file_sha256(path), suffix)
        if not (self.root / key).exists():
            with open(path, "rb") as f:
                self._write(key, iter(lambda: f.read(_CHUNK), b""))
        return self.uri(key)

    def put_as(self, name: str, data: bytes) -> str:
        key = _check_name(name)
        self._write(key, [data])
        return self.uri(key)

    def put_file_as(self, name: str, path: Path) -> str:
        key = _check_name(name)
        with open(path, "rb") as f:
            self._write(key, iter(lambda: f.read(_CHUNK), b""))
        return self.uri(key)

    def get(self, uri: str) -> bytes:
        path = self._path(uri)
        if not path.is_file():
            raise BadInput(f"no blob at {uri}", reason="blob_missing")
        return path.read_bytes()

    def names(self, folder: str) -> list[str]:
        top = self.root / _check_name(folder)
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in top.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")  # a write in progress
        )

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def _path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        path = Path(unquote(parsed.path)).resolve()  # as_uri() percent-quotes, so unquote
        if parsed.scheme != "file" or not path.is_relative_to(self.root):
            raise BadInput(f"{uri} is not in this store ({self.root.as_uri()})", reason="bad_uri")
        return path

    def _write(self, key: str, blocks: Iterable[bytes]) -> None:
        target = self.root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                for block in blocks:
                    f.write(block)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide blobs from other service users
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class S3BlobStore:
    """Blobs in an S3 bucket (or MinIO) under a prefix, through s3fs."""

    def __init__(self, bucket_uri: str, settings: BlobSettings) -> None:
        import s3fs  # the s3 extra; only needed when the store is on S3

        parsed = urlparse(bucket_uri)
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        secret = settings.s3_secret_access_key
        # A private instance without the listings cache: fsspec's shared, never-expiring cache
        # would let one listing hide objects that other services write or delete later.
        self.fs = s3fs.S3FileSystem(
            skip_instance_cache=True,
            use_listings_cache=False,
            key=settings.s3_access_key_id,
            secret=secret.get_secret_value() if secret else None,
            endpoint_url=settings.s3_endpoint_url,
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}{key}"

    def put(self, data: bytes, *, suffix: str = "") -> str:
        uri = self.uri(_content_key(hashlib.sha256(data).hexdigest(), suffix))
        if not self.fs.exists(uri):
            self.fs.pipe_file(uri, data)  # one PUT: S3 objects appear whole or not at all
        return uri

    def put_file(self, path: Path, *, suffix: str = "") -> str:
        uri = self.uri(_content_key(_file_sha256(path), suffix))
        if not self.fs.exists(uri):
            self.fs.put_file(str(path), uri)
        return uri

    def put_as(self, name: str, data: bytes) -> str:
        uri = self.uri(_check_name(name))
        self.fs.pipe_file(uri, data)
        return uri

    def put_file_as(self, name: str, path: Path) -> str:
        uri = self.uri(_check_name(name))
        self.fs.put_file(str(path), uri)
        return uri

    def get(self, uri: str) -> bytes:
        self._check(uri)
        try:
            return bytes(self.fs.cat_file(uri))
        except FileNotFoundError:
            raise BadInput(f"no blob at {uri}", reason="blob_missing") from None

    def names(self, folder: str) -> list[str]:
        root = self.uri("").removeprefix("s3://")
        found = self.fs.find(self.uri(_check_name(folder)))
        return sorted(str(path).removeprefix(root) for path in found)

    def exists(self, uri: str) -> bool:
        self._check(uri)
        return bool(self.fs.exists(uri))

    def _check(self, uri: str) -> None:
        if not uri.startswith(self.uri("")):
            raise BadInput(f"{uri} is not in this store ({self.uri('')})", reason="bad_uri")


def open_store(settings: BlobSettings) -> BlobStore:
    """The store `settings.store_uri` names: file://DIR (relative allowed) or s3://BUCKET/PREFIX."""
    uri = settings.store_uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc in ("", "localhost"):
            return FileBlobStore(Path(unquote(parsed.path)))
        # file://relative/dir is not standard but is what people type; take it as relative.
        return FileBlobStore(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"BLOB_STORE_URI {uri!r} has no bucket")
        return S3BlobStore(uri, settings)
    raise ValueError(f"BLOB_STORE_URI {uri!r}: use file://DIR or s3://BUCKET/PREFIX")


def put_tree(store: BlobStore, directory: Path, name: str) -> str:
    """Every file under `directory` stored under `name/` (relative paths kept); its URI."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            store.put_file_as(f"{name}/{path.relative_to(directory).as_posix()}", path)
    return store.uri(name)


def name_of(store: BlobStore, uri: str) -> str:
    """The relative name (as given to `put_as`) of a URI in this store, for `get_tree`."""
    base = store.uri("").rstrip("/") + "/"
    if not uri.startswith(base):
        raise BadInput(f"{uri} is not in the blob store at {base}", reason="blob_elsewhere")
    name = uri[len(base) :]
    return unquote(name) if base.startswith("file:") else name  # as_uri() quotes


def get_tree(store: BlobStore, name: str, directory: Path) -> Path:
    """The blobs under `name/` written below `directory` as files; returns `directory`."""
    prefix = _check_name(name) + "/"
    found = store.names(name)
    if not found:
        raise BadInput(f"no blobs under {store.uri(name)}", reason="blob_missing")
    for key in found:
        target = directory / key.removeprefix(prefix)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(store.get(store.uri(key)))
    return directory
