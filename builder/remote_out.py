"""``render --out s3://bucket/prefix``: a build written straight to object
storage, by whichever process renders each shard.

A worker (a local process, or a Ray task on any node) renders its shard into
a scratch folder of its own and puts it at its final key with publish's
rules: the sha256 in the object's metadata, a conditional write (a key this
build did not see is never replaced), the object read back and compared.
The driver keeps everything that decides the result, as for a local folder:
it claims the prefix, writes a state object while the build is unfinished,
checks the listed shards on ``--resume``, and commits ``_info.json`` and
then ``manifest.json`` last, conditionally, exactly as ``publish`` commits a
local build. The objects are therefore the ones ``render --out DIR`` and
``publish DIR s3://...`` put there, byte for byte, metadata included.

A shard goes to its final key at once, not under a temporary key then
renamed: a PUT is atomic in S3 (the object appears whole when the request
completes; a multipart upload only when it is completed), so a killed worker
leaves the key absent or as it was, never half written; and S3 has no
rename, so a temporary key would cost a server-side copy of every shard and
two requests more, for nothing. ``--resume`` reads every listed shard back
and checks its samples against the plan anyway, as a local resume does.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

from . import manifest as mf
from . import pool, shards
from .build import BuildSpec, existing_build, is_build_file, shard_records
from .errors import BuildFailure, UserError
from .location import Location, resolve_endpoint, resolve_timeout
from .publish import DEFAULT_JOBS, DEFAULT_PART_SIZE, Item, publish_object, remote_listing, upload_object, \
    write_condition
from .remote_commit import PublishRace, check_committed, check_objects, commit_manifest, read_claim

# The driver's credentials, when it has them in its environment, travel to
# the workers as task arguments (never logged: the field is left out of
# every repr); a worker without them uses its own node's chain (profile,
# instance role). Region and endpoint are not secret.
CREDENTIAL_ENV = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token"}
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # botocore's own, after --endpoint-url

CHECK_THREADS = 16  # HEAD requests in flight while checking every object around the commit
_locations: dict[tuple, Location] = {}  # one client per worker process and target


@dataclass(frozen=True)
class RemoteTarget:
    """Where a worker puts its shards: all plain data, so that it pickles to
    a Ray task on another node. ``conditions``: the write condition of each
    shard key that was listed when the build claimed the prefix (one not
    listed is written only if still absent: ``If-None-Match: *``)."""

    url: str
    endpoint_url: str | None
    timeout: float
    region: str | None = None
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    conditions: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, url: str, endpoint_url: str | None, timeout: float | None) -> "RemoteTarget":
        """The target as this process sees it: --endpoint-url or the
        environment's endpoint, --timeout, and its credentials if set in
        its environment."""
        endpoint = resolve_endpoint(endpoint_url) or next(
            (os.environ[name] for name in ENDPOINT_ENV if os.environ.get(name)), None)
        credentials = {arg: os.environ[name] for name, arg in CREDENTIAL_ENV.items() if os.environ.get(name)}
        if not {"key", "secret"} <= set(credentials):
            credentials = {}
        region = next((os.environ[name] for name in REGION_ENV if os.environ.get(name)), None)
        return cls(url, endpoint, resolve_timeout(timeout), region, credentials)

    def location(self) -> Location:
        """This process's client for the target (made once per process: a
        forked worker must not use its parent's event loop)."""
        key = (os.getpid(), self.url, self.endpoint_url, self.timeout, self.region,
               tuple(sorted(self.credentials.items())))
        if key not in _locations:
            options: dict[str, Any] = dict(self.credentials)
            if self.region:
                options["client_kwargs"] = {"region_name": self.region}
            _locations[key] = Location(self.url, endpoint_url=self.endpoint_url, timeout=self.timeout, **options)
        return _locations[key]

    def put(self, folder: str, result: pool.ShardResult) -> None:
        """Upload the shard ``result`` describes from ``folder``, checked
        (publish's :func:`fracbuild.publish.publish_object`)."""
        # Straight to the final key: a PUT is atomic (see the module's docstring).
        condition = self.conditions.get(result.file, {"IfNoneMatch": "*"})
        publish_object(self.location(), folder, Item(result.file, result.bytes, result.sha256), DEFAULT_PART_SIZE,
                       condition)


def check_remote_shard(location: Location, plan: shards.ShardPlan, prefix: str, width: int,
                       per_class: int) -> pool.ShardResult | None:
    """The shard of ``plan`` under ``location``, read back and checked as a
    local resume checks a file; None when it is absent or not exactly what
    the plan says (it is then rendered again and replaces the object)."""
    file = shards.shard_name(prefix, plan.index)
    try:
        data = location.read_bytes(file)
    except FileNotFoundError:
        return None
    except Exception as error:
        location.raise_user_error(error)
        raise BuildFailure(f"{location.uri(file)}: cannot check: {error}") from None
    try:
        records = shard_records(shards.read_shard(data), plan, width, per_class)
    except (ValueError, KeyError):
        return None
    return pool.ShardResult(plan, file, len(data), hashlib.sha256(data).hexdigest(), records)


class RemoteOutput:
    """``--out`` as an ``s3://`` prefix: the driver's side of the build (the
    same methods as :class:`fracbuild.build.LocalOutput`)."""

    def __init__(self, url: str, *, endpoint_url: str | None = None, timeout: float | None = None,
                 jobs: int = DEFAULT_JOBS, log: Callable[[str], None] = lambda m: None):
        if url.split("://", 1)[0] not in ("s3", "s3a"):
            raise UserError(f"--out {url}: a build writes to a local folder or an s3:// prefix")
        self.location = Location(url, endpoint_url=endpoint_url, timeout=timeout)
        if not self.location.bucket:
            raise UserError(f"--out {url}: no bucket named")
        self.where = self.location.url
        self.target = RemoteTarget.of(url, endpoint_url, timeout)
        self.jobs = max(1, min(jobs, DEFAULT_JOBS))  # threads reading shards back on --resume
        self.log = log
        self.claim: Any = None
        self.prefix = ""

    def _fail(self, error: Exception, doing: str) -> BuildFailure:
        """One line for a remote call that failed: a UserError for what the
        user can fix (no bucket, denied), else a BuildFailure to return."""
        self.location.raise_user_error(error)
        return BuildFailure(f"{self.where}: cannot {doing}: {error}")

    def check(self, spec: BuildSpec, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        """As :func:`fracbuild.build.check_output`, on the listing of the
        prefix; also claims it (its manifest's ETag, every object's) for
        the conditional writes."""
        if resume and overwrite:
            raise UserError("--resume and --overwrite exclude each other")
        self.prefix = spec.prefix
        etags: dict[str, str] = {}
        listing = remote_listing(self.location, etags)
        try:
            self.claim = read_claim(self.location, listing)
        except Exception as error:
            raise self._fail(error, "read its manifest") from None
        self.claim.etags = etags

        def read_state() -> dict[str, Any]:
            try:
                return json.loads(self.location.read_bytes(mf.BUILD_STATE_NAME).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as error:
                raise UserError(f"cannot read the unfinished build's state "
                                f"{self.location.uri(mf.BUILD_STATE_NAME)}: {error}") from None
            except Exception as error:
                raise self._fail(error, "read the unfinished build's state") from None

        return existing_build(list(listing), spec, self.where, resume=resume, overwrite=overwrite,
                              read_state=read_state, read_manifest=self.read_manifest, things="objects")

    def read_manifest(self) -> dict[str, Any]:
        return self.location.read_manifest()

    def begin(self, spec: BuildSpec, system: dict, search_seconds: float, overwrite: bool,
              state: dict[str, Any] | None) -> None:
        """Write the state object (a resumed build keeps the one there)."""
        if state:
            return
        data = mf.to_json_text({"spec": spec.identity(), "system": system,
                                "search_seconds": search_seconds}).encode("utf-8")
        condition = write_condition(self.claim, mf.BUILD_STATE_NAME)
        path = self.location.path(mf.BUILD_STATE_NAME)
        try:
            self.location.retry(lambda: self.location.fs.pipe_file(path, data, **condition),
                                self.location.uri(mf.BUILD_STATE_NAME))
        except FileExistsError:  # 412: written since this build listed the prefix
            raise PublishRace(f"another build is writing to {self.where}; this one stops before rendering") from None
        except Exception as error:
            raise self._fail(error, "write the build's state") from None

    def finished(self, plans: list[shards.ShardPlan], prefix: str, width: int,
                 per_class: int) -> list[pool.ShardResult]:
        """The listed shards that hold what the plan says, read back on
        this machine (``jobs`` at a time)."""
        listed = [p for p in plans if shards.shard_name(prefix, p.index) in self.claim.listing]
        with futures.ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="resume-check") as threads:
            found = list(threads.map(
                lambda plan: check_remote_shard(self.location, plan, prefix, width, per_class), listed))
        return [result for result in found if result]

    def worker_spec(self, spec: BuildSpec, params: Any, system: dict, width: int,
                    todo: list[shards.ShardPlan]) -> pool.WorkerSpec:
        names = (shards.shard_name(spec.prefix, p.index) for p in todo)
        conditions = {name: write_condition(self.claim, name) for name in names if name in self.claim.listing}
        target = dataclasses.replace(self.target, conditions=conditions)
        return pool.WorkerSpec(spec.kind, params, spec.seed, system, "", spec.prefix, width, target)

    def shard_path(self, result: pool.ShardResult) -> str:
        return self.location.uri(result.file)

    def cleanup(self) -> None:
        pass  # nothing partial is ever under a final key (see the module's docstring)

    def _check_objects(self, items: list[Item], when: str) -> None:
        """publish's check of every object (size and sha256), CHECK_THREADS
        requests at a time: one after another, 82,032 shards would take
        half an hour of round trips."""
        chunks = [items[start::CHECK_THREADS] for start in range(CHECK_THREADS)]
        with futures.ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="commit-check") as threads:
            for done in [threads.submit(check_objects, self.location, chunk, when) for chunk in chunks if chunk]:
                done.result()

    def commit(self, info: dict[str, Any], manifest: dict[str, Any], results: list[pool.ShardResult]) -> None:
        """``_info.json``, then the manifest, as publish commits them: every
        shard checked first, the manifest written conditionally on what the
        claim saw, the prefix checked after; then the state object and the
        objects of an earlier build that this one does not list go."""
        items = [Item(r.file, r.bytes, r.sha256) for r in results]
        with tempfile.TemporaryDirectory(prefix="fracbuild-commit-") as scratch:
            for name, payload in ((mf.TIMM_INFO_NAME, info), (mf.MANIFEST_NAME, manifest)):
                mf.write_json_atomic(os.path.join(scratch, name), payload)  # the bytes a local build writes
            info_item, manifest_item = (Item(name, os.path.getsize(os.path.join(scratch, name)),
                                             shards.sha256_file(os.path.join(scratch, name)))
                                        for name in (mf.TIMM_INFO_NAME, mf.MANIFEST_NAME))
            manifest_path = os.path.join(scratch, mf.MANIFEST_NAME)
            placed = [*items, info_item]
            try:
                publish_object(self.location, scratch, info_item, DEFAULT_PART_SIZE,
                               write_condition(self.claim, mf.TIMM_INFO_NAME))
                self._check_objects(placed, "before the commit")
                single = max(DEFAULT_PART_SIZE, manifest_item.bytes)  # one PUT, which carries the condition
                commit_manifest(self.location, self.claim, lambda condition: upload_object(
                    self.location, manifest_path, manifest_item, single, **condition))
                with open(manifest_path, "rb") as handle:
                    check_committed(self.location, handle.read(), [])  # the manifest there is ours
                self._check_objects(placed, "after the commit")
            except (UserError, BuildFailure):
                raise
            except Exception as error:
                raise self._fail(error, "commit the data set (run again with --resume to finish)") from None
        kept = {item.name for item in placed} | {mf.MANIFEST_NAME}
        stale = sorted({name for name in self.claim.listing if is_build_file(name, self.prefix)} - kept
                       | {mf.BUILD_STATE_NAME})
        for name in stale:
            path = self.location.path(name)
            try:
                self.location.retry(lambda path=path: self.location.fs.rm_file(path), self.location.uri(name))
            except Exception as error:  # the data set is committed: a leftover is only clutter
                self.log(f"warning: could not remove {self.location.uri(name)}: {error}")
        dropped = [name for name in stale if name != mf.BUILD_STATE_NAME]
        if dropped:
            self.log(f"removed {len(dropped)} object(s) of the replaced data set (--overwrite), e.g. {dropped[0]}")
