"""Publish a finished data set to S3-compatible object storage.

Every shard goes up first (in parallel), then ``_info.json``, then the
manifest **last**: readers treat the manifest as the commit marker, so no
reader ever sees a partial data set. Each uploaded object is read back and
its sha256 compared with the manifest's before it counts as published.

A re-run (or the resumption of an interrupted publish) decides per object:

* missing, or a size other than the manifest's -> upload;
* same size -> read it back and hash it; upload only if the sha256 differs.
  With ``trust_metadata`` the sha256 recorded in the object's metadata at
  upload time (``x-amz-meta-sha256``) stands in for reading it back.

:class:`ShardStreamer` does the same while a build renders: each shard is
uploaded as soon as it lands, and the manifest after the build returns.
"""

from __future__ import annotations

import concurrent.futures as futures
import datetime
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm import tqdm

from . import manifest as mf
from . import outlock, shards
from .errors import BuildFailure, UserError
from .location import Location
from .remote_commit import (SHA256_METADATA, Claim, PublishRace, check_committed, check_objects, commit_manifest,
                            content, head, read_claim, remove_dropped)

DEFAULT_JOBS = 8
MIB = 1 << 20
DEFAULT_PART_SIZE = 16 * MIB  # objects of at least twice this go up in parts
MIN_PART_SIZE = 5 * MIB  # S3's smallest part (all but the last)
PART_CONCURRENCY = 4  # parts of one object in flight at once
# An incomplete multipart upload at least this old (seconds) is a dead run's.
STALE_UPLOAD_SECONDS = 15 * 60


@dataclass(frozen=True)
class Item:
    """One object to publish: its name under the prefix, size and sha256."""

    name: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Decision:
    item: Item
    upload: bool
    reason: str  # why: "missing", "sha256 differs", "already there and correct", ...


@dataclass
class PublishReport:
    destination: str
    dry_run: bool = False
    uploaded: list[Item] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"destination": self.destination, "dry_run": self.dry_run,
                "uploaded": len(self.uploaded), "uploaded_bytes": sum(i.bytes for i in self.uploaded),
                "skipped": len(self.skipped), "skipped_bytes": sum(i.bytes for i in self.skipped)}

    def message(self) -> str:
        done, kept = self.summary(), len(self.skipped)
        if self.dry_run:
            return (f"dry run: would upload {done['uploaded']} object(s) ({_size(done['uploaded_bytes'])}) to "
                    f"{self.destination}; {kept} already there and correct")
        if not self.uploaded:
            return f"{self.destination}: nothing to upload, all {kept} objects already there and correct"
        return (f"published {self.destination}: uploaded {done['uploaded']} object(s) "
                f"({_size(done['uploaded_bytes'])}), {kept} already there and correct")


def _size(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} bytes"


def check_destination(destination: Location) -> None:
    if destination.protocol not in ("s3", "s3a"):
        raise UserError(f"cannot publish to {destination.url}: give an s3:// prefix "
                        "(AWS S3, or R2, MinIO, ... with --endpoint-url)")
    if not destination.bucket:
        raise UserError(f"{destination.url}: no bucket named")


def check_part_size(part_size: int) -> None:
    if part_size < MIN_PART_SIZE:
        raise UserError(f"--part-size must be at least {MIN_PART_SIZE // MIB} MiB (S3's smallest part)")


# --- what is here and what is there -------------------------------------
def local_items(source_dir: str) -> tuple[list[Item], list[Item]]:
    """(shards, tail) of the finished data set in ``source_dir``: the tail is
    ``_info.json`` then the manifest, which go up after every shard."""
    if os.path.exists(os.path.join(source_dir, mf.BUILD_STATE_NAME)):
        raise UserError(f"{source_dir} holds an unfinished build; finish it with 'fracbuild render --resume' "
                        "before publishing")
    manifest = mf.read_manifest(source_dir)
    items = [Item(s["file"], s["bytes"], s["sha256"]) for s in manifest["shards"]]
    for item in items:
        path = os.path.join(source_dir, item.name)
        if not os.path.isfile(path):
            raise UserError(f"{path} is missing; the data set in {source_dir} is incomplete "
                            f"(run 'fracbuild verify {source_dir}')")
        if os.path.getsize(path) != item.bytes:
            raise UserError(f"{path} holds {os.path.getsize(path)} bytes, its manifest says {item.bytes} "
                            f"(run 'fracbuild verify {source_dir}')")
    tail = []
    for name in (mf.TIMM_INFO_NAME, mf.MANIFEST_NAME):
        path = os.path.join(source_dir, name)
        if os.path.isfile(path):
            tail.append(Item(name, os.path.getsize(path), shards.sha256_file(path)))
    return items, tail


def remote_listing(destination: Location, etags: dict[str, str] | None = None) -> dict[str, int]:
    """Object name -> size directly under the destination prefix (and name
    -> ETag into ``etags``). A missing bucket or denied access becomes a
    one-line UserError."""
    try:
        found = destination.retry(lambda: destination.fs.ls(destination.root, detail=True, refresh=True),
                                  destination.url)
    except FileNotFoundError as error:
        destination.raise_user_error(error)  # NoSuchBucket
        return {}  # an empty prefix
    except Exception as error:
        destination.raise_user_error(error)
        raise
    prefix = destination.root.rstrip("/") + "/"
    objects = [info for info in found if info["name"].startswith(prefix) and info.get("type") != "directory"]
    if etags is not None:
        etags.update({info["name"][len(prefix):]: info["ETag"] for info in objects if info.get("ETag")})
    return {info["name"][len(prefix):]: int(info["size"]) for info in objects}


def decide(destination: Location, item: Item, listing: dict[str, int], trust_metadata: bool) -> Decision:
    """Whether ``item`` must be uploaded, judged against what is there."""
    there = listing.get(item.name)
    if there is None:
        return Decision(item, True, "missing")
    if there != item.bytes:
        return Decision(item, True, f"{there} bytes there, {item.bytes} expected")
    if trust_metadata:
        recorded = destination.retry(lambda: destination.fs.metadata(destination.path(item.name)),
                                     destination.uri(item.name))
        if recorded.get(SHA256_METADATA) == item.sha256:
            return Decision(item, False, "present (metadata trusted, not read back)")
    digest, _ = destination.sha256(item.name)
    if digest != item.sha256:
        return Decision(item, True, "sha256 differs")
    return Decision(item, False, "already there and correct")


# --- moving one object ----------------------------------------------------
def upload_object(destination: Location, local_path: str, item: Item, part_size: int, **condition: str) -> None:
    """Put one file at ``item.name`` with its sha256 in the metadata; s3fs
    uploads it in ``part_size`` parts when it is at least twice that.
    ``condition`` (IfMatch / IfNoneMatch) makes a single PUT conditional:
    another writer's object is never replaced unseen."""
    if item.bytes >= 2 * part_size:
        condition = {}  # a multipart upload does not carry it; the checks around the commit cover these
    destination.fs.put_file(local_path, destination.path(item.name), chunksize=part_size,
                            max_concurrency=PART_CONCURRENCY, Metadata={SHA256_METADATA: item.sha256}, **condition)


def write_condition(claim: Claim, name: str) -> dict[str, str]:
    """Replace only what this run saw: nothing (If-None-Match) or the
    version listed at its start (If-Match on its ETag)."""
    if name not in claim.listing:
        return {"IfNoneMatch": "*"}
    return {"IfMatch": claim.etags[name]} if name in claim.etags else {}


def publish_object(destination: Location, source_dir: str, item: Item, part_size: int,
                   condition: dict[str, str] | None = None) -> None:
    """Upload ``item`` from ``source_dir`` and check it: the local file must
    match the manifest first, and the object read back must match after.
    A mismatch fails the publish; the manifest is then never committed."""
    local_path = os.path.join(source_dir, item.name)
    local = shards.sha256_file(local_path)
    if local != item.sha256:
        raise BuildFailure(f"{local_path}: sha256 {local[:12]}..., its manifest says {item.sha256[:12]}... "
                           f"(run 'fracbuild verify {source_dir}')")
    try:
        try:
            destination.retry(lambda: upload_object(destination, local_path, item, part_size, **(condition or {})),
                              destination.uri(item.name))
        except FileExistsError:  # 412: the object is not the version this run saw
            if head(destination, item.name) != (item.bytes, item.sha256):  # unless a lost answer to our own PUT
                raise PublishRace(f"another publish is writing to {destination.url}: {item.name} appeared or "
                                   "changed since this run looked; this run commits nothing") from None
        digest, size = destination.sha256(item.name)
    except BuildFailure:
        raise
    except Exception as error:
        destination.raise_user_error(error)
        raise BuildFailure(f"{destination.uri(item.name)}: upload failed: {error}") from error
    if (digest, size) != (item.sha256, item.bytes):
        # Not removed: the bytes there may be another publisher's, written after ours.
        raise BuildFailure(f"{destination.uri(item.name)}: read back {size} bytes with sha256 {digest[:12]}..., "
                           f"expected {item.bytes} bytes with sha256 {item.sha256[:12]}...")


# --- the whole data set -----------------------------------------------------
def _local_manifest(source_dir: str) -> dict[str, Any] | None:
    path = os.path.join(source_dir, mf.MANIFEST_NAME)
    return mf.read_manifest(path) if os.path.isfile(path) else None


def abort_stale_uploads(destination: Location, names: set[str], log: Callable[[str], None]) -> list[str]:
    """Abort the incomplete multipart uploads of this data set's objects
    that a killed run left under the prefix (the store keeps, and bills,
    their parts until then). Only those started STALE_UPLOAD_SECONDS or
    more ago: a publish running now may own a younger one."""
    bucket, key, _ = destination.fs.split_path(destination.path(""))
    prefix = key.rstrip("/") + "/"
    try:
        answer = destination.retry(lambda: destination.fs.call_s3("list_multipart_uploads", Bucket=bucket,
                                                                  Prefix=prefix), destination.url)
    except Exception as error:  # a store without the call: nothing of ours to abort there
        destination.raise_user_error(error)
        return []
    now = datetime.datetime.now(datetime.timezone.utc)
    aborted = []
    for upload in answer.get("Uploads", []):
        name = upload["Key"][len(prefix):]
        age = (now - upload["Initiated"]).total_seconds() if upload.get("Initiated") else float("inf")
        if name in names and age >= STALE_UPLOAD_SECONDS:
            destination.retry(lambda upload=upload: destination.fs.call_s3(
                "abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]),
                destination.uri(name))
            aborted.append(name)
    if aborted:
        log(f"aborted {len(aborted)} incomplete upload(s) left under {destination.url} by an earlier run "
            f"(e.g. {aborted[0]})")
    return aborted


def claim_destination(destination: Location, source_dir: str, overwrite: bool, dry_run: bool,
                      log: Callable[[str], None]) -> Claim:
    """Check the destination before anything moves; returns what this run
    saw there (the commit is conditional on it).

    A data set there whose content (configuration, classes, shards) differs
    from ours is refused unless ``overwrite``. Its manifest stays committed
    until ours replaces it, so the prefix is never without one."""
    check_destination(destination)
    etags: dict[str, str] = {}
    listing = remote_listing(destination, etags)
    try:
        claim = read_claim(destination, listing)
    except FileNotFoundError:  # removed since the listing: an empty prefix again
        listing.pop(mf.MANIFEST_NAME, None)
        claim = read_claim(destination, listing)
    except Exception as error:
        destination.raise_user_error(error)
        raise
    claim.etags = etags
    if claim.manifest is not None:
        ours = _local_manifest(source_dir)
        if ours is None or content(ours) != content(claim.manifest):
            if not overwrite:
                raise UserError(f"{destination.url} already holds a different data set (its configuration, "
                                "classes or shards differ); choose another prefix, or pass --overwrite to "
                                "replace it")
            log(f"{'would replace' if dry_run else 'replacing'} the data set at {destination.url} (--overwrite); "
                "its manifest stays until the new one is committed")
    return claim


def publish(source_dir: str, destination: Location, *, jobs: int = DEFAULT_JOBS, dry_run: bool = False,
            trust_metadata: bool = False, overwrite: bool = False, part_size: int = DEFAULT_PART_SIZE,
            progress: bool = True, log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
            verified: frozenset[str] = frozenset(), claim: Claim | None = None) -> PublishReport:
    """Publish the finished data set in ``source_dir`` to ``destination``.

    ``verified``: names this process has already uploaded and checked (by
    :class:`ShardStreamer`), skipped without a look. ``claim``: what the
    caller saw at the destination when it claimed it before this call.
    """
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {jobs}")
    check_part_size(part_size)
    check_destination(destination)
    # No build may rewrite the folder while its files go up.
    with outlock.hold(source_dir, create=False, what="SOURCE"):
        return _publish_locked(source_dir, destination, jobs=jobs, dry_run=dry_run, trust_metadata=trust_metadata,
                               overwrite=overwrite, part_size=part_size, progress=progress, log=log,
                               verified=verified, claim=claim)


def _publish_locked(source_dir: str, destination: Location, *, jobs: int, dry_run: bool, trust_metadata: bool,
                    overwrite: bool, part_size: int, progress: bool, log: Callable[[str], None],
                    verified: frozenset[str], claim: Claim | None) -> PublishReport:
    items, tail = local_items(source_dir)
    if claim is None:
        claim = claim_destination(destination, source_dir, overwrite, dry_run, log)
    listing = claim.listing
    if not dry_run:
        abort_stale_uploads(destination, {i.name for i in items + tail}, log)
    extra = sorted(set(listing) - {i.name for i in items + tail} - claim.manifest_names)
    if extra:
        log(f"{len(extra)} object(s) under {destination.url} are not in the manifest and stay as they are "
            f"(e.g. {extra[0]})")
    report = PublishReport(destination.url, dry_run=dry_run)
    bar = tqdm(total=sum(i.bytes for i in items + tail), unit="B", unit_scale=True, desc="publish",
               disable=not progress or dry_run, file=sys.stderr, dynamic_ncols=True)

    def one(item: Item) -> Decision:
        if item.name in verified:
            decision = Decision(item, True, "uploaded and checked while rendering")
        else:
            try:
                decision = decide(destination, item, listing, trust_metadata)
            except Exception as error:
                destination.raise_user_error(error)
                raise BuildFailure(f"{destination.uri(item.name)}: cannot check: {error}") from error
            if decision.upload and not dry_run:
                publish_object(destination, source_dir, item, part_size, write_condition(claim, item.name))
        (report.uploaded if decision.upload else report.skipped).append(item)
        bar.update(item.bytes)
        return decision

    def commit(item: Item) -> Decision:
        """The manifest: written last, conditionally, then checked."""
        placed = [*items, *(i for i in tail if i.name != mf.MANIFEST_NAME)]
        ours = mf.read_manifest(source_dir)
        if claim.manifest is not None and content(claim.manifest) == content(ours):
            decision = Decision(item, False, "already there: the same data set (its manifest may differ in "
                                             "timings only)")
        else:
            decision = Decision(item, True, "the commit, after every object")
        if not dry_run:
            check_objects(destination, placed, "before the commit")
            local_path = os.path.join(source_dir, mf.MANIFEST_NAME)
            with open(local_path, "rb") as handle:
                data = handle.read()
            if decision.upload:
                single = max(part_size, item.bytes)  # one PUT, which carries the condition
                commit_manifest(destination, claim,
                                lambda condition: upload_object(destination, local_path, item, single, **condition))
            else:
                data = destination.read_bytes(mf.MANIFEST_NAME)
            check_committed(destination, data, placed)
            if decision.upload and overwrite:
                remove_dropped(destination, claim, {i.name for i in placed} | {mf.MANIFEST_NAME}, log)
        (report.uploaded if decision.upload else report.skipped).append(item)
        bar.update(item.bytes)
        return decision

    try:
        decisions = _run_all(one, items, jobs)
        # _info.json, then the manifest (the commit), strictly after every shard.
        decisions += [one(item) if item.name != mf.MANIFEST_NAME else commit(item) for item in tail]
    except PublishRace:
        raise  # its line already says where the prefix stands
    except (BuildFailure, OSError) as error:
        placed = len(report.uploaded) + len(report.skipped)
        raise BuildFailure(f"{error}; {placed} of {len(items) + len(tail)} objects are in place but the "
                           f"manifest is not, so readers see no data set: run the same command again "
                           f"to finish") from error
    except KeyboardInterrupt:
        raise BuildFailure("interrupted; the manifest is not published, so readers see no data set: "
                           "run the same command again to finish") from None
    finally:
        bar.close()
    if dry_run:
        for decision in decisions:
            verb = "upload" if decision.upload else "keep"
            log(f"{verb:<6} {decision.item.name} ({decision.item.bytes} bytes): {decision.reason}")
    return report


def _run_all(task: Callable[[Item], Decision], items: list[Item], jobs: int) -> list[Decision]:
    """``task`` over ``items`` on ``jobs`` threads, results in ``items``'
    order; the first failure cancels what has not started and is raised
    once the running ones finish."""
    if jobs == 1:
        return [task(item) for item in items]
    pool = futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="publish")
    try:
        pending = [pool.submit(task, item) for item in items]
        for future in futures.as_completed(pending):
            future.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [future.result() for future in pending]


class ShardStreamer:
    """Publishes a data set while it is built: call it with ``(path,
    result)`` as each shard lands (``run_build``'s ``on_shard``); after the
    build, :meth:`finish` publishes whatever is left and the manifest last.

    A failed upload stops the build at the next shard (resume it with
    ``--resume``); nothing is committed remotely until :meth:`finish`.
    """

    def __init__(self, destination: Location, source_dir: str, *, jobs: int = DEFAULT_JOBS,
                 part_size: int = DEFAULT_PART_SIZE, overwrite: bool = False,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)):
        if jobs < 1:
            raise UserError(f"--jobs must be >= 1, got {jobs}")
        check_part_size(part_size)
        self.destination, self.source_dir, self.part_size, self.log = destination, source_dir, part_size, log
        self.jobs = jobs
        # Fail on credentials, a missing bucket or another data set there before rendering.
        self.overwrite = overwrite
        self.claim = claim_destination(destination, source_dir, overwrite, False, log)
        self.listing = self.claim.listing
        self.pool = futures.ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="publish")
        self.pending: list[futures.Future] = []
        self.verified: set[str] = set()

    def __call__(self, path: str, result: Any) -> None:
        self._raise_first_failure(done_only=True)
        item = Item(result.file, result.bytes, result.sha256)
        self.pending.append(self.pool.submit(self._upload, item))

    def _upload(self, item: Item) -> None:
        publish_object(self.destination, self.source_dir, item, self.part_size,
                       write_condition(self.claim, item.name))
        self.verified.add(item.name)
        self.listing[item.name] = item.bytes

    def _raise_first_failure(self, done_only: bool) -> None:
        for future in self.pending:
            if done_only and not future.done():
                continue
            error = future.exception()
            if error is not None:
                self.close()
                if isinstance(error, (UserError, PublishRace)):
                    raise error
                raise BuildFailure(f"uploading while rendering: {error}; run again with --resume") from error

    def finish(self, progress: bool = False) -> PublishReport:
        """Wait for the uploads in flight, then publish the rest and the manifest."""
        self._raise_first_failure(done_only=False)
        self.pool.shutdown(wait=True)
        return publish(self.source_dir, self.destination, jobs=self.jobs, part_size=self.part_size,
                       overwrite=self.overwrite, progress=progress, log=self.log, verified=frozenset(self.verified),
                       claim=self.claim)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
