"""Committing a published data set: the manifest goes up last, once, and
only over the state this run saw at its start.

Two publishes to one prefix may run at once (two jobs, two people). Each
claims the prefix at its start (the manifest there, if any, and its ETag),
and commits with a conditional write: ``If-None-Match: *`` when the prefix
had no manifest, ``If-Match: <ETag seen>`` when it replaces one. The second
committer's write is refused by the store, so it exits with one line
instead of silently replacing the first one's data set. Before the commit
every listed object is checked again (size and sha256), and after it the
prefix is checked against the manifest just written: a publish never
reports success for a prefix that would fail ``fracbuild verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from . import manifest as mf
from .errors import BuildFailure, UserError
from .location import Location

SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256


class PublishRace(BuildFailure):
    """Another publish wrote to the same prefix meanwhile. Its message names
    the prefix and says what state it is in; running again does not help
    until the two publishers agree on one data set."""
# Manifest fields that describe a run, not the data set: two byte-identical
# builds differ in them.
RUN_FIELDS = ("timings", "environment", "tool")


def content(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a data set is (configuration, classes, every shard's sample
    range and sha256), without how long its build took or where it ran, in
    the current manifest version: a version 1 manifest of the same data set
    has the same content."""
    try:
        manifest = mf.upgraded(manifest)
    except (UserError, KeyError, TypeError):  # not a manifest of ours: compared as it is
        pass
    return {key: value for key, value in manifest.items() if key not in RUN_FIELDS}


@dataclass
class Claim:
    """The prefix as this run found it: its listing (name -> bytes), and its
    manifest with the ETag the commit is conditional on (None: no manifest)."""

    listing: dict[str, int]
    manifest: dict[str, Any] | None = None
    etag: str | None = None
    etags: dict[str, str] = field(default_factory=dict)  # every listed object's, for conditional writes

    @property
    def manifest_names(self) -> set[str]:
        if self.manifest is None:
            return set()
        return {shard["file"] for shard in self.manifest["shards"]} | {mf.TIMM_INFO_NAME}


def read_claim(destination: Location, listing: dict[str, int]) -> Claim:
    """The manifest under ``destination`` and its ETag, read in that order
    of ETag then bytes: a manifest replaced in between makes the commit's
    If-Match fail, never succeed on stale knowledge."""
    if mf.MANIFEST_NAME not in listing:
        return Claim(listing)
    path = destination.path(mf.MANIFEST_NAME)
    etag = destination.retry(lambda: destination.fs.info(path, refresh=True), destination.url)["ETag"]
    text = destination.read_bytes(mf.MANIFEST_NAME).decode("utf-8", errors="replace")
    try:
        manifest = json.loads(text)
    except ValueError:
        manifest = {"shards": []}  # not ours to read: any other data set is "different"
    return Claim(listing, manifest if isinstance(manifest, dict) else {"shards": []}, etag)


def head(destination: Location, name: str) -> tuple[int, str | None]:
    """(bytes, sha256 recorded at upload or None) of one object, fresh."""
    bucket, key, _ = destination.fs.split_path(destination.path(name))
    answer = destination.retry(lambda: destination.fs.call_s3("head_object", Bucket=bucket, Key=key),
                               destination.uri(name))
    return int(answer["ContentLength"]), answer.get("Metadata", {}).get(SHA256_METADATA)


def check_objects(destination: Location, items: list, when: str) -> None:
    """Every item is there with its size and sha256 (the one recorded at
    upload, or read back where none was recorded); BuildFailure naming the
    first that is not."""
    for item in items:
        try:
            size, recorded = head(destination, item.name)
        except FileNotFoundError:
            raise PublishRace(f"{destination.uri(item.name)} vanished {when} (another publish to "
                               f"{destination.url}?)") from None
        digest = recorded if recorded is not None and size == item.bytes else None
        if digest is None and size == item.bytes:
            digest, size = destination.sha256(item.name)
        if (size, digest) != (item.bytes, item.sha256):
            raise PublishRace(f"{destination.uri(item.name)} changed {when} (another publish to "
                               f"{destination.url}?): {size} bytes, sha256 {str(digest)[:12]}..., this run "
                               f"published {item.bytes} bytes, sha256 {item.sha256[:12]}...")


def commit_manifest(destination: Location, claim: Claim, write: Callable[[dict[str, str]], None]) -> None:
    """Write the manifest only over what ``claim`` saw: ``write(condition)``
    puts it with that If-Match / If-None-Match condition. Refused by the store
    (one line naming the prefix) when another publish committed meanwhile."""
    condition = {"IfMatch": claim.etag} if claim.etag else {"IfNoneMatch": "*"}
    try:
        destination.retry(lambda: write(condition), destination.url)
    except FileExistsError:  # s3fs's word for 412 Precondition Failed
        raise PublishRace(f"another publish committed a manifest at {destination.url} while this one ran; "
                           f"this run's data set is not committed (check it with 'fracbuild verify "
                           f"{destination.url}')") from None
    except Exception as error:
        if "PreconditionFailed" in str(error) or "412" in str(error):
            raise PublishRace(f"another publish committed a manifest at {destination.url} while this one ran; "
                               "this run's data set is not committed") from None
        destination.raise_user_error(error)
        raise


def check_committed(destination: Location, data: bytes, items: list) -> None:
    """The prefix holds the manifest this run wrote and every object it lists."""
    there = destination.read_bytes(mf.MANIFEST_NAME)
    if there != data:
        raise PublishRace(f"{destination.uri(mf.MANIFEST_NAME)} was replaced right after this run committed it "
                           f"(another publish to {destination.url})")
    check_objects(destination, items, "after the commit")


def remove_dropped(destination: Location, claim: Claim, kept: set[str], log) -> list[str]:
    """After an --overwrite commit: delete the objects the replaced manifest
    listed and the new one does not. Nothing else is ever deleted: an
    object this run did not see listed may be another writer's."""
    dropped = sorted(claim.manifest_names - kept)
    for name in dropped:
        destination.retry(lambda name=name: destination.fs.rm_file(destination.path(name)), destination.uri(name))
    if dropped:
        log(f"removed {len(dropped)} object(s) of the replaced data set (--overwrite), e.g. {dropped[0]}")
    return dropped
