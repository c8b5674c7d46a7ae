"""Reading objects of the Cell Painting Gallery from S3 (anonymous) or from a local mirror.

Every image path comes from a load-data URL (``s3://cellpainting-gallery/<key>``);
:func:`url_to_key` turns it into a bucket key and refuses anything that would leave
the bucket (``..`` segments, another bucket, a local path). A *root* is where keys
are read from: the public bucket, another ``s3://bucket/prefix``, or a local folder
with the same layout, where a key that resolves outside the folder (a symlink) is
refused as well.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import numpy as np

from ...errors import DataError

BUCKET = "cellpainting-gallery"
DEFAULT_ROOT = f"s3://{BUCKET}"


class PathTraversalError(DataError):
    """A load-data URL or key that points outside ``--root``."""


class MissingObjectError(Exception):
    """The object does not exist under the root (not retried)."""


class TransientError(Exception):
    """A network failure that may succeed on retry."""


def check_key(key: str, where: str, shown: str | None = None) -> str:
    """Return ``key`` if it stays inside the bucket, else raise :class:`PathTraversalError`."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("..", ".") for p in parts):
        raise PathTraversalError(f"{where}: refused '{shown or key}': it points outside --root "
                                 "(no '..' or '.' segments, no absolute paths allowed)")
    return key


def url_to_key(url: str, where: str) -> str:
    """The bucket key of a load-data URL; refuse URLs outside the Cell Painting Gallery bucket.

    Accepted forms: ``s3://cellpainting-gallery/<key>``,
    ``https://cellpainting-gallery.s3.amazonaws.com/<key>`` and
    ``https://s3[.<region>].amazonaws.com/cellpainting-gallery/<key>``.
    """
    parsed = urlparse(url.strip())
    if parsed.scheme == "s3" and parsed.netloc == BUCKET:
        key = parsed.path.lstrip("/")
    elif parsed.scheme == "https" and parsed.netloc.startswith(f"{BUCKET}.s3"):
        key = unquote(parsed.path).lstrip("/")
    elif parsed.scheme == "https" and parsed.netloc.startswith("s3") and parsed.path.startswith(f"/{BUCKET}/"):
        key = unquote(parsed.path)[len(BUCKET) + 2:]
    else:
        raise PathTraversalError(f"{where}: refused '{url}': it points outside --root (only URLs into "
                                 f"s3://{BUCKET}/ are read; they are mapped under --root)")
    return check_key(key, where, url)


class Root(Protocol):
    """Where bucket keys are read from."""

    description: str

    def read(self, key: str) -> bytes:
        """The object's bytes; :class:`MissingObjectError` if absent, :class:`TransientError` on network trouble."""

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when unknown."""


class LocalRoot:
    """A local folder with the bucket layout (``<root>/cpg0016-jump/source_3/...``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder).expanduser().resolve()
        if not self.folder.is_dir():
            raise DataError(f"--root {folder} is not a folder; pass a local mirror of the bucket or {DEFAULT_ROOT}")
        self.description = str(self.folder)

    def path(self, key: str) -> Path:
        check_key(key, str(self.folder))
        path = (self.folder / key).resolve()
        if not path.is_relative_to(self.folder):
            raise PathTraversalError(f"refused '{key}': it resolves to {path}, outside --root {self.folder}")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise MissingObjectError(f"{self.folder / key} does not exist") from None

    def size(self, key: str) -> int | None:
        try:
            return self.path(key).stat().st_size
        except OSError:
            return None


class S3Root:
    """An S3 bucket (anonymous, unsigned requests), optionally with a key prefix."""

    def __init__(self, bucket: str, prefix: str = "", max_connections: int = 16):
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.max_connections = max_connections
        self.description = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._local = threading.local()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import boto3
            from botocore import UNSIGNED
            from botocore.config import Config

            config = Config(signature_version=UNSIGNED, max_pool_connections=self.max_connections,
                            retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=20, read_timeout=60)
            client = self._local.client = boto3.session.Session().client("s3", config=config)
        return client

    def _full(self, key: str) -> str:
        check_key(key, self.description)
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self._client().get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise MissingObjectError(f"s3://{self.bucket}/{self._full(key)} does not exist") from None
            raise TransientError(f"s3://{self.bucket}/{self._full(key)}: {exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"s3://{self.bucket}/{self._full(key)}: {exc}") from None

    def size(self, key: str) -> int | None:
        try:
            return int(self._client().head_object(Bucket=self.bucket, Key=self._full(key))["ContentLength"])
        except Exception:  # noqa: BLE001 - an estimate only
            return None


def open_root(root: str, max_connections: int = 16) -> Root:
    """A :class:`Root` for ``s3://bucket[/prefix]`` or a local folder."""
    if root.startswith("s3://"):
        bucket, _, prefix = root[5:].partition("/")
        if not bucket:
            raise DataError(f"--root {root} names no bucket; use {DEFAULT_ROOT} or a local folder")
        return S3Root(bucket, prefix, max_connections)
    if "://" in root:
        raise DataError(f"--root {root}: only s3:// URLs and local folders are supported")
    return LocalRoot(Path(root))


@dataclass(frozen=True)
class ImageResult:
    """One decoded channel image and the bytes read for it."""

    pixels: np.ndarray
    n_bytes: int


class ImageReadError(Exception):
    """An image could not be read after all attempts; ``reason`` goes into the skip record."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key}: {reason}")
        self.key, self.reason = key, reason


def decode_tiff(data: bytes) -> np.ndarray:
    """A 2-D image from TIFF bytes; raise ``ValueError`` for anything else."""
    import tifffile

    try:
        pixels = tifffile.imread(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on corrupt files
        raise ValueError(f"unreadable TIFF ({type(exc).__name__}: {exc})") from None
    pixels = np.squeeze(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D single-channel TIFF, got shape {pixels.shape}")
    return pixels


def fetch_image(root: Root, key: str, attempts: int = 3, backoff_s: float = 1.0) -> ImageResult:
    """Read and decode one TIFF with retries and exponential backoff.

    Network errors and undecodable bytes (a truncated transfer) are retried on
    S3 roots; a missing object is not retried. A local file that fails to decode
    is not retried either (it would fail again). After the last attempt a network
    error is re-raised as :class:`TransientError` (the run stops: nothing is
    recorded); other failures raise :class:`ImageReadError` (the site is skipped
    with a record).
    """
    retry_decode = not isinstance(root, LocalRoot)
    for attempt in range(1, attempts + 1):
        try:
            data = root.read(key)
            return ImageResult(decode_tiff(data), len(data))
        except MissingObjectError as exc:
            raise ImageReadError(key, f"missing ({exc})") from None
        except TransientError:
            if attempt == attempts:
                raise
        except ValueError as exc:
            if attempt == attempts or not retry_decode:
                raise ImageReadError(key, str(exc)) from None
        time.sleep(backoff_s * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
