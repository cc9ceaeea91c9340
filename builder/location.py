"""Where a data set lives: a local directory or an object-store prefix
(``s3://bucket/prefix``, ``https://host/path``), read through fsspec so that
verify, info, publish and the trainer use one code path for both.

Remote calls are retried in one layer, here, with exponential backoff on
transient errors (dropped connections, timeouts, 5xx and throttling
answers), each retry said on stderr; anything else (a missing object,
denied access) is raised at once. botocore's and s3fs's own retries are
turned off so that the layers do not multiply, and every request has
connect and read timeouts: an endpoint that accepts connections and never
answers fails within about ``timeout`` seconds per operation. Credentials for s3://
come from botocore's standard chain (environment, profile, instance role)
and never appear in a message.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import sys
import time
from typing import Any, BinaryIO, Callable, TypeVar

import fsspec

from . import manifest as mf
from .errors import BuildFailure, UserError, redact

T = TypeVar("T")

# The endpoint of an S3-compatible store (R2, MinIO, ...) when --endpoint-url
# is not given. botocore itself also honours AWS_ENDPOINT_URL_S3,
# AWS_ENDPOINT_URL and ``endpoint_url`` in the AWS config file.
ENDPOINT_ENV = "FRACBUILD_ENDPOINT_URL"

RETRY_TRIES = 4
RETRY_DELAY = 0.5  # seconds before the second try; doubled before each next one
TIMEOUT_ENV = "FRACBUILD_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds one remote operation may take, its retries included
# Connect and read timeouts are this fraction of it: one operation may send a
# request or two (a HEAD before a GET) and still have time for a retry.
REQUESTS_PER_BUDGET = 4
READ_CHUNK = 8 << 20

# errno values s3fs and the OS give to answers worth asking again: 500
# (EREMOTEIO), 503 / SlowDown (EBUSY), timeouts and resets.
_TRANSIENT_ERRNOS = {errno.EREMOTEIO, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET,
                     errno.ECONNABORTED, errno.EPIPE}
# Never transient, whatever their errno says.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def is_transient(error: BaseException) -> bool:
    """Whether asking again may succeed: a dropped connection, a timeout, a
    server error or throttling; not a missing object or denied access."""
    if isinstance(error, _PERMANENT):
        return False
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return True
    try:
        from botocore import exceptions as botocore_errors
    except ImportError:
        pass
    else:
        if isinstance(error, (botocore_errors.ConnectionError, botocore_errors.HTTPClientError)):
            return True
    try:
        import aiohttp
    except ImportError:
        pass
    else:
        if isinstance(error, aiohttp.ClientResponseError):
            return error.status >= 500 or error.status == 429
        if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
            return True
    return False


def _say_retry(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def retry(call: Callable[[], T], what: str, tries: int = RETRY_TRIES, delay: float | None = None,
          sleep: Callable[[float], None] = time.sleep, budget: float | None = None,
          say: Callable[[str], None] | None = None) -> T:
    """``call()``, tried up to ``tries`` times while it fails transiently,
    waiting ``delay`` (default RETRY_DELAY), ``2 delay``, ... in between,
    and never starting a try once ``budget`` seconds have passed since the
    first. Each retry is told to ``say`` (default: stderr). The last
    transient error is raised as ``ConnectionError`` naming ``what``; any
    other error at once."""
    delay = RETRY_DELAY if delay is None else delay
    say = _say_retry if say is None else say
    started = time.monotonic()
    for attempt in range(tries):
        try:
            return call()
        except Exception as error:
            if not is_transient(error):
                raise
            wait = delay * 2**attempt
            spent = time.monotonic() - started
            if attempt == tries - 1 or (budget is not None and spent + wait >= budget):
                raise ConnectionError(f"{what}: still failing after {attempt + 1} tries: "
                                      f"{_describe(error)}") from error
            say(f"retry {attempt + 2}/{tries} of {redact(what)} in {wait:g} s: {redact(_describe(error))}")
            sleep(wait)
    raise AssertionError("unreachable")


def resolve_timeout(timeout: float | None) -> float:
    """--timeout, else $FRACBUILD_TIMEOUT, else DEFAULT_TIMEOUT (seconds)."""
    if timeout is None:
        text = os.environ.get(TIMEOUT_ENV)
        try:
            timeout = float(text) if text else DEFAULT_TIMEOUT
        except ValueError:
            raise UserError(f"${TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if not timeout > 0:
        raise UserError(f"--timeout must be > 0 seconds, got {timeout}")
    return float(timeout)


def _read_local(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def error_code(error: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``, ``AccessDenied``, ...) behind an
    exception s3fs translated, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        response = getattr(error, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            return response["Error"].get("Code")
        error = error.__cause__ or error.__context__
    return None


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """--endpoint-url, else $FRACBUILD_ENDPOINT_URL, else None (botocore's own
    configuration decides: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, profile)."""
    return endpoint_url or os.environ.get(ENDPOINT_ENV) or None


class Location:
    """A data-set root. Names are file names relative to the root.

    ``endpoint_url`` (s3:// only) points at an S3-compatible store; see
    :func:`resolve_endpoint`. Other keyword arguments go to the fsspec file
    system unchanged.
    """

    def __init__(self, url: str, endpoint_url: str | None = None, timeout: float | None = None,
                 **storage_options: Any):
        self.url = url.rstrip("/")
        self.protocol = self.url.split("://", 1)[0] if is_remote(self.url) else "file"
        self.timeout = resolve_timeout(timeout)
        if self.protocol in ("s3", "s3a"):
            attempt = self.timeout / REQUESTS_PER_BUDGET
            storage_options.setdefault("config_kwargs", {"connect_timeout": attempt, "read_timeout": attempt,
                                                         "retries": {"total_max_attempts": 1}})
        elif self.protocol in ("http", "https"):
            try:
                import aiohttp
            except ImportError:  # url_to_fs below says how to install it
                pass
            else:
                attempt = self.timeout / REQUESTS_PER_BUDGET
                storage_options.setdefault("client_kwargs", {"timeout": aiohttp.ClientTimeout(
                    sock_connect=attempt, sock_read=attempt)})
        if self.protocol in ("s3", "s3a"):
            endpoint = resolve_endpoint(endpoint_url)
            if endpoint and not re.match(r"^https?://[^/]", endpoint):
                shown = endpoint.rsplit("@", 1)[-1]  # never echo credentials written into it
                raise UserError(f"endpoint {shown!r} (--endpoint-url or ${ENDPOINT_ENV}) needs a scheme "
                                f"and a host, e.g. http://localhost:9000")
            if endpoint:
                storage_options.setdefault("endpoint_url", endpoint)
            # A fresh client per Location: credentials are read from the chain now,
            # not reused from an earlier instance with other credentials.
            storage_options.setdefault("skip_instance_cache", True)
        elif endpoint_url:
            raise UserError(f"--endpoint-url applies to s3:// locations, not {url}")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **storage_options)
        except ImportError:
            extra = "s3" if self.protocol in ("s3", "s3a") else "http"
            hint = "pip install 'onepfrac[s3]'" if extra == "s3" else "pip install aiohttp"
            raise UserError(f"cannot open {url}: {self.protocol}:// support is not installed ({hint})") from None
        except ValueError as error:
            raise UserError(f"cannot open {url}: {error}") from None
        if self.protocol in ("s3", "s3a"):
            self.fs.retries = 1  # s3fs's own retry loop: once; ours (retry) is the only layer

    @property
    def remote(self) -> bool:
        return self.protocol != "file"

    @property
    def bucket(self) -> str | None:
        return self.root.split("/", 1)[0] if self.protocol in ("s3", "s3a") else None

    def endpoint(self) -> str:
        """The service a remote location talks to, for messages."""
        if self.protocol not in ("s3", "s3a"):
            return self.url.split("/", 3)[2] if self.remote else "local disk"
        try:
            return str(self.fs.s3.meta.endpoint_url)
        except Exception:  # only a label for a message; never fail on it
            return getattr(self.fs, "endpoint_url", None) or "the default AWS endpoint"

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name) if self.remote else f"{self.root}/{name}"

    def uri(self, name: str) -> str:
        return f"{self.url}/{name}"

    def retry(self, call: Callable[[], T], what: str) -> T:
        """:func:`retry` within this location's time budget."""
        return retry(call, what, budget=self.timeout if self.remote else None)

    def _retry(self, call: Callable[[], T], name: str) -> T:
        # Local reads too: shared file systems (NFS, Lustre) time out and
        # reset as well; a missing file is never retried (is_transient).
        return self.retry(call, self.uri(name))

    def exists(self, name: str) -> bool:
        return self._retry(lambda: self.fs.exists(self.path(name)), name)

    def size(self, name: str) -> int:
        return int(self._retry(lambda: self.fs.size(self.path(name)), name))

    def open(self, name: str) -> BinaryIO:
        """A file object for reading ``name``. Opening is retried; a transient
        error in a later read is the caller's to handle (or use read_bytes)."""
        return self._retry(lambda: self.fs.open(self.path(name), "rb"), name)

    def read_bytes(self, name: str) -> bytes:
        """The whole object, retried from the start on a transient error."""
        if self.remote:
            return self._retry(lambda: self.fs.cat_file(self.path(name)), name)
        return self._retry(lambda: _read_local(self.path(name)), name)

    def sha256(self, name: str) -> tuple[str, int]:
        """(sha256 hex digest, bytes) of ``name``, streamed in chunks; a
        transient error restarts the read."""

        def digest() -> tuple[str, int]:
            hasher, total = hashlib.sha256(), 0
            with self.fs.open(self.path(name), "rb", block_size=READ_CHUNK, cache_type="none") as handle:
                while block := handle.read(READ_CHUNK):
                    hasher.update(block)
                    total += len(block)
            return hasher.hexdigest(), total

        return self._retry(digest, name)

    def read_manifest(self) -> dict[str, Any]:
        """The validated manifest; UserError when missing or invalid."""
        source = self.uri(mf.MANIFEST_NAME)
        try:
            text = self.read_bytes(mf.MANIFEST_NAME).decode("utf-8")
        except FileNotFoundError as error:
            self.raise_user_error(error)
            raise UserError(f"no manifest at {source}: not a finished fracbuild data set") from None
        except UnicodeDecodeError as error:
            raise UserError(f"cannot read {source}: {error}") from None
        except Exception as error:  # remote stores raise their own types too
            if not isinstance(error, OSError) and not self.remote:
                raise
            self.raise_user_error(error)
            raise UserError(f"cannot read {source}: {_describe(error)}") from None
        return mf.parse_manifest(text, source)

    def raise_user_error(self, error: BaseException) -> None:
        """Raise the one-line error a user can act on for a failed remote call
        (missing bucket, denied access, no credentials, unreachable endpoint);
        return if ``error`` is none of these. Never includes credentials."""
        if not self.remote:
            return
        code = error_code(error)
        if getattr(error, "status", None) in (401, 403):  # https:// (aiohttp)
            raise UserError(f"{self.url}: access denied (HTTP {error.status})") from None
        if code == "NoSuchBucket":
            raise UserError(f"bucket {self.bucket!r} does not exist at {self.endpoint()}") from None
        if isinstance(error, PermissionError) or code in ("AccessDenied", "InvalidAccessKeyId",
                                                          "SignatureDoesNotMatch", "ExpiredToken"):
            raise UserError(f"{self.protocol}://{self.bucket or self.root}: access denied "
                            "(check AWS credentials)") from None
        try:
            from botocore import exceptions as botocore_errors
        except ImportError:
            return
        if isinstance(error, (botocore_errors.NoCredentialsError, botocore_errors.PartialCredentialsError)):
            raise UserError(f"{self.url}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") from None
        if isinstance(error, ConnectionError) and is_transient(error.__cause__ or error):
            raise BuildFailure(f"cannot reach {self.endpoint()}: {error}") from None
