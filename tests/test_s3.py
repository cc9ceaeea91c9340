"""Object storage: publish, remote verify, render --publish, https:// reads.

A real S3-compatible HTTP server (moto's) runs on 127.0.0.1 with a free
port for the session; the commands talk to it over HTTP through the same
code paths users run (``fracbuild.cli.main``). Every client gets the
endpoint explicitly and the environment holds dummy credentials with the
instance-metadata probe off, so nothing leaves the loopback interface.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import threading

import pytest

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from fracbuild import pool as pool_mod  # noqa: E402
from fracbuild import location as location_mod  # noqa: E402
from fracbuild import publish as publish_mod  # noqa: E402
from fracbuild.cli import main  # noqa: E402
from fracbuild.errors import UserError  # noqa: E402
from fracbuild.location import Location  # noqa: E402

SECRET = "dummy-secret-never-printed"
_buckets = itertools.count()


@pytest.fixture(scope="session")
def s3_endpoint():
    """``http://127.0.0.1:PORT`` of an S3 server running for the session."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no request log on stderr
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path, s3_endpoint):
    """Dummy credentials, no AWS config files, no metadata-service probe, and
    the test server as botocore's default endpoint (a safety net: tests also
    pass it explicitly)."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name == location_mod.ENDPOINT_ENV:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setattr(location_mod, "RETRY_DELAY", 0.01)


@pytest.fixture
def s3(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket(s3):
    name = f"fracdata-{next(_buckets)}"
    s3.create_bucket(Bucket=name)
    return name


def fracbuild(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def publish_cli(capsys, source, url, endpoint, *extra):
    code, out, err = fracbuild(capsys, "publish", source, url, "--endpoint-url", endpoint, "--no-progress",
                               "--json", *extra)
    return code, (json.loads(out) if code == 0 else None), err


def keys(s3, bucket: str, prefix: str = "") -> dict[str, int]:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["Size"] for o in listed}


def expected_objects(source) -> dict[str, int]:
    return {name: os.path.getsize(os.path.join(source, name)) for name in os.listdir(source)}


@pytest.fixture
def upload_log(monkeypatch):
    """Names passed to the uploader, in order (the real uploader still runs)."""
    names: list[str] = []
    real = publish_mod.upload_object

    def spy(destination, local_path, item, part_size, **condition):
        real(destination, local_path, item, part_size, **condition)
        names.append(item.name)

    monkeypatch.setattr(publish_mod, "upload_object", spy)
    return names


# --- publish, verify, re-run ----------------------------------------------
def test_publish_uploads_everything_manifest_last_and_verify_passes(
        capsys, tiny_dataset, s3, bucket, s3_endpoint, upload_log):
    url = f"s3://{bucket}/sets/tiny"
    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint)
    assert code == 0, err
    local = expected_objects(tiny_dataset)
    assert summary["uploaded"] == len(local) == 5 and summary["skipped"] == 0
    assert summary["uploaded_bytes"] == sum(local.values())
    assert keys(s3, bucket) == {f"sets/tiny/{name}": size for name, size in local.items()}
    # The commit marker goes strictly last, after _info.json and every shard.
    assert upload_log[-2:] == ["_info.json", "manifest.json"]
    # Each object carries its sha256 (x-amz-meta-sha256), equal to the bytes'.
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    for shard in manifest["shards"]:
        head = s3.head_object(Bucket=bucket, Key=f"sets/tiny/{shard['file']}")
        assert head["Metadata"]["sha256"] == shard["sha256"]
        body = s3.get_object(Bucket=bucket, Key=f"sets/tiny/{shard['file']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == shard["sha256"]

    code, _, err = fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")
    assert code == 0, err
    assert f"{url}: OK, 16 samples in 3 shards" in err
    assert SECRET not in err


def test_second_publish_uploads_nothing_and_says_so(capsys, tiny_dataset, bucket, s3_endpoint, monkeypatch):
    url = f"s3://{bucket}/tiny"
    assert publish_cli(capsys, tiny_dataset, url, s3_endpoint)[0] == 0

    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint)
    assert code == 0, err
    assert (summary["uploaded"], summary["uploaded_bytes"], summary["skipped"]) == (0, 0, 5)
    assert "nothing to upload, all 5 objects already there and correct" in err

    # --trust-metadata decides from size + the recorded sha256: no object is read back.
    reads = []
    monkeypatch.setattr(Location, "sha256", lambda self, name: reads.append(name))
    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint, "--trust-metadata")
    assert code == 0, err
    assert (summary["uploaded_bytes"], summary["skipped"], reads) == (0, 5, [])


def test_dry_run_lists_what_would_move_and_moves_nothing(capsys, tiny_dataset, s3, bucket, s3_endpoint):
    url = f"s3://{bucket}/tiny"
    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint, "--dry-run")
    assert code == 0, err
    assert summary["uploaded"] == 5 and summary["dry_run"]
    assert "upload tiny-000000.tar" in err and "missing" in err
    assert err.index("_info.json") < err.index("manifest.json")
    assert keys(s3, bucket) == {}


def test_interrupted_publish_leaves_no_manifest_and_a_rerun_finishes(
        capsys, tiny_dataset, s3, bucket, s3_endpoint, monkeypatch):
    url = f"s3://{bucket}/tiny"
    real = publish_mod.upload_object
    calls = []

    def fail_after_two(destination, local_path, item, part_size, **condition):
        calls.append(item.name)
        if len(calls) > 2:
            raise OSError("injected failure: connection lost for good")
        real(destination, local_path, item, part_size, **condition)

    monkeypatch.setattr(publish_mod, "upload_object", fail_after_two)
    code, _, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint, "--jobs", "1")
    assert code == 1
    assert "injected failure" in err and "run the same command again" in err
    assert len(err.strip().splitlines()) == 1
    there = keys(s3, bucket, "tiny/")
    assert len(there) == 2 and "tiny/manifest.json" not in there and "tiny/_info.json" not in there
    # A reader sees no data set.
    code, _, err = fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")
    assert code == 2 and "no manifest at" in err

    monkeypatch.setattr(publish_mod, "upload_object", real)
    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint)
    assert code == 0, err
    assert (summary["uploaded"], summary["skipped"]) == (3, 2)
    assert keys(s3, bucket, "tiny/") == {f"tiny/{n}": s for n, s in expected_objects(tiny_dataset).items()}
    assert fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")[0] == 0


def test_corrupt_or_truncated_remote_object_is_caught_by_verify_and_repaired_by_publish(
        capsys, tiny_dataset, s3, bucket, s3_endpoint):
    url = f"s3://{bucket}/tiny"
    assert publish_cli(capsys, tiny_dataset, url, s3_endpoint)[0] == 0
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    flipped, cut = manifest["shards"][1], manifest["shards"][2]
    body = bytearray((tiny_dataset / flipped["file"]).read_bytes())
    body[len(body) // 2] ^= 0xFF  # same size, different bytes
    s3.put_object(Bucket=bucket, Key=f"tiny/{flipped['file']}", Body=bytes(body))
    data = (tiny_dataset / cut["file"]).read_bytes()
    s3.put_object(Bucket=bucket, Key=f"tiny/{cut['file']}", Body=data[: len(data) // 2])

    code, _, err = fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")
    assert code == 1
    assert f"problem: {flipped['file']}: sha256" in err and flipped["sha256"][:12] in err
    assert f"problem: {cut['file']}: {len(data) // 2} bytes, manifest says {cut['bytes']}" in err

    code, summary, err = publish_cli(capsys, tiny_dataset, url, s3_endpoint)
    assert code == 0, err
    assert summary["uploaded"] == 2 and summary["uploaded_bytes"] == flipped["bytes"] + cut["bytes"]
    assert fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")[0] == 0


def test_a_rebuild_of_the_same_data_set_is_the_same_data_set(capsys, tiny_dataset, tmp_path, s3, bucket,
                                                             s3_endpoint):
    url = f"s3://{bucket}/tiny"
    assert publish_cli(capsys, tiny_dataset, url, s3_endpoint)[0] == 0
    first = s3.get_object(Bucket=bucket, Key="tiny/manifest.json")["Body"].read()
    rebuilt = tmp_path / "rebuilt"
    shutil.copytree(tiny_dataset, rebuilt)
    manifest = json.loads((rebuilt / "manifest.json").read_text())
    manifest["timings"]["render_seconds"] += 1.0  # a byte-identical rebuild, timed differently
    manifest["environment"]["python"] = "another"
    (rebuilt / "manifest.json").write_text(json.dumps(manifest))

    code, summary, err = publish_cli(capsys, rebuilt, url, s3_endpoint)
    assert code == 0, err
    assert (summary["uploaded"], summary["skipped"]) == (0, 5)
    assert s3.get_object(Bucket=bucket, Key="tiny/manifest.json")["Body"].read() == first


def test_overwrite_keeps_a_manifest_until_the_new_one_commits_then_drops_old_objects(
        capsys, tiny_dataset, tmp_path, s3, bucket, s3_endpoint, monkeypatch):
    from conftest import build_tiny

    url = f"s3://{bucket}/tiny"
    assert publish_cli(capsys, tiny_dataset, url, s3_endpoint)[0] == 0
    other = tmp_path / "other"
    build_tiny(other, seed=5, shard_size=8)  # another data set: two shards, not three
    code, _, err = publish_cli(capsys, other, url, s3_endpoint)
    assert code == 2 and "already holds a different data set" in err and "--overwrite" in err

    manifests_seen = []
    real = publish_mod.upload_object

    def watch(destination, local_path, item, part_size, **condition):
        manifests_seen.append("tiny/manifest.json" in keys(s3, bucket, "tiny/"))
        real(destination, local_path, item, part_size, **condition)

    monkeypatch.setattr(publish_mod, "upload_object", watch)
    code, summary, err = publish_cli(capsys, other, url, s3_endpoint, "--overwrite")
    assert code == 0, err
    assert manifests_seen and all(manifests_seen), "the prefix was left without a manifest during the upload"
    assert keys(s3, bucket, "tiny/") == {f"tiny/{name}": size for name, size in expected_objects(other).items()}
    assert s3.get_object(Bucket=bucket, Key="tiny/manifest.json")["Body"].read() == \
        (other / "manifest.json").read_bytes()
    assert fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")[0] == 0


def test_large_object_goes_up_in_parts_and_is_checked(tmp_path, s3, bucket, s3_endpoint):
    part = publish_mod.MIN_PART_SIZE
    data = os.urandom(2 * part + 123_457)
    (tmp_path / "big.tar").write_bytes(data)
    item = publish_mod.Item("big.tar", len(data), hashlib.sha256(data).hexdigest())
    destination = Location(f"s3://{bucket}/big", endpoint_url=s3_endpoint)

    publish_mod.publish_object(destination, str(tmp_path), item, part_size=part)
    head = s3.head_object(Bucket=bucket, Key="big/big.tar")
    assert head["ETag"].strip('"').endswith("-3")  # a three-part multipart upload
    assert head["ContentLength"] == len(data) and head["Metadata"]["sha256"] == item.sha256
    assert destination.sha256("big.tar") == (item.sha256, len(data))


def test_an_object_that_reads_back_wrong_fails_and_is_left_alone(tmp_path, s3, bucket, s3_endpoint, monkeypatch):
    (tmp_path / "a.tar").write_bytes(b"payload")
    item = publish_mod.Item("a.tar", 7, hashlib.sha256(b"payload").hexdigest())
    destination = Location(f"s3://{bucket}/x", endpoint_url=s3_endpoint)
    monkeypatch.setattr(Location, "sha256", lambda self, name: ("0" * 64, 7))  # a store that mangled it
    with pytest.raises(publish_mod.BuildFailure, match="read back 7 bytes with sha256 000000000000"):
        publish_mod.publish_object(destination, str(tmp_path), item, part_size=publish_mod.MIN_PART_SIZE)
    # Not deleted: what is there may be another publisher's write, not this one's.
    assert keys(s3, bucket) == {"x/a.tar": 7}


# --- one clear line for the usual mistakes ---------------------------------
def test_wrong_credentials_give_one_line_without_the_secret(capsys, tiny_dataset, bucket, s3_endpoint,
                                                           monkeypatch, caplog):
    from moto.core.authorization import enable_iam_authentication

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    caplog.set_level(logging.DEBUG)
    with enable_iam_authentication():  # the server now checks signatures against known keys
        code, _, err = publish_cli(capsys, tiny_dataset, f"s3://{bucket}/tiny", s3_endpoint)
        assert code == 2
        assert err == f"error: s3://{bucket}: access denied (check AWS credentials)\n"
        code, _, err = fracbuild(capsys, "verify", f"s3://{bucket}/tiny", "--endpoint-url", s3_endpoint,
                                 "--no-progress")
        assert code == 2
        assert err == f"error: s3://{bucket}: access denied (check AWS credentials)\n"
    assert SECRET not in caplog.text


def test_missing_bucket_gives_one_line(capsys, tiny_dataset, s3_endpoint):
    code, _, err = publish_cli(capsys, tiny_dataset, "s3://no-such-bucket/tiny", s3_endpoint)
    assert code == 2
    assert err == f"error: bucket 'no-such-bucket' does not exist at {s3_endpoint}\n"
    code, _, err = fracbuild(capsys, "verify", "s3://no-such-bucket/tiny", "--endpoint-url", s3_endpoint,
                             "--no-progress")
    assert code == 2
    assert err == f"error: bucket 'no-such-bucket' does not exist at {s3_endpoint}\n"


def test_publish_refuses_what_it_cannot_do(capsys, tiny_dataset, tmp_path, bucket, s3_endpoint):
    code, _, err = fracbuild(capsys, "publish", tiny_dataset, str(tmp_path / "copy"))
    assert code == 2 and "give an s3:// prefix" in err
    code, _, err = publish_cli(capsys, tiny_dataset, f"s3://{bucket}/t", s3_endpoint, "--part-size", "4")
    assert code == 2 and "--part-size must be at least 5 MiB" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = publish_cli(capsys, empty, f"s3://{bucket}/t", s3_endpoint)
    assert code == 2 and "cannot read manifest" in err
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_dataset, unfinished)
    (unfinished / ".fracbuild-build.json").write_text("{}")
    code, _, err = publish_cli(capsys, unfinished, f"s3://{bucket}/t", s3_endpoint)
    assert code == 2 and "holds an unfinished build" in err


# --- render --publish ----------------------------------------------------------
def test_render_publish_uploads_shards_while_rendering_and_the_manifest_last(
        capsys, tmp_path, s3, bucket, s3_endpoint, monkeypatch):
    uploaded: dict[str, threading.Event] = {}
    order: list[str] = []
    lock = threading.Lock()
    real_upload, real_render = publish_mod.upload_object, pool_mod.render_shard

    def upload(destination, local_path, item, part_size, **condition):
        real_upload(destination, local_path, item, part_size, **condition)
        with lock:
            order.append(item.name)
            uploaded.setdefault(item.name, threading.Event()).set()

    def render_after_previous_upload(plan):
        # Shard i is rendered only once shard i-1 is in the bucket: this
        # finishes only if uploads run while the build is still rendering.
        if plan.index > 0:
            with lock:
                event = uploaded.setdefault(f"tiny-{plan.index - 1:06d}.tar", threading.Event())
            assert event.wait(20), "the previous shard was not uploaded while rendering"
        return real_render(plan)

    monkeypatch.setattr(publish_mod, "upload_object", upload)
    monkeypatch.setattr(pool_mod, "render_shard", render_after_previous_upload)
    out, url = tmp_path / "built", f"s3://{bucket}/streamed"
    code, stdout, err = fracbuild(
        capsys, "render", "--L", "16", "--size", "64", "--pad", "2", "--iterations", "5000", "--shard-size", "6",
        "--name", "tiny", "--workers", "1", "--no-progress", "--json", "--out", out,
        "--publish", url, "--endpoint-url", s3_endpoint)
    assert code == 0, err
    assert order[:3] == [f"tiny-{i:06d}.tar" for i in range(3)]
    assert order[3:] == ["_info.json", "manifest.json"]
    assert json.loads(stdout)["published"]["uploaded"] == 5
    assert keys(s3, bucket, "streamed/") == {f"streamed/{n}": s for n, s in expected_objects(out).items()}
    assert fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")[0] == 0


def test_render_publish_checks_the_destination_before_rendering(capsys, tmp_path, s3_endpoint):
    code, _, err = fracbuild(capsys, "render", "--L", "16", "--size", "64", "--out", tmp_path / "never",
                             "--publish", "s3://no-such-bucket/x", "--endpoint-url", s3_endpoint)
    assert code == 2 and "bucket 'no-such-bucket' does not exist" in err
    assert not (tmp_path / "never").exists()


# --- reading: https://, endpoint from the environment, retries ----------------
def test_https_location_reads_a_public_bucket(capsys, tiny_dataset, s3, bucket, s3_endpoint):
    assert publish_cli(capsys, tiny_dataset, f"s3://{bucket}/pub", s3_endpoint)[0] == 0
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                                                      "Resource": f"arn:aws:s3:::{bucket}/*"}]}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    url = f"{s3_endpoint}/{bucket}/pub"  # plain HTTP here; https:// takes the same path
    code, _, err = fracbuild(capsys, "verify", url, "--no-progress")
    assert code == 0, err
    assert f"{url}: OK, 16 samples in 3 shards" in err
    code, _, err = fracbuild(capsys, "verify", f"{s3_endpoint}/{bucket}/nothing-here", "--no-progress")
    assert code == 2 and "no manifest at" in err


def test_endpoint_comes_from_the_environment(tiny_dataset, bucket, s3_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    destination = Location(f"s3://{bucket}/env")
    assert destination.endpoint() == s3_endpoint
    report = publish_mod.publish(str(tiny_dataset), destination, progress=False, log=lambda m: None)
    assert len(report.uploaded) == 5
    assert Location(f"s3://{bucket}/env").read_manifest()["num_samples"] == 16
    with pytest.raises(UserError, match="--endpoint-url applies to s3://"):
        Location(str(tiny_dataset), endpoint_url=s3_endpoint)


def test_retry_backs_off_on_transient_errors_only():
    from botocore.exceptions import EndpointConnectionError

    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
        return "data"

    assert location_mod.retry(flaky, "x", delay=0.5, sleep=waits.append) == "data"
    assert waits == [0.5, 1.0]

    def missing():
        calls.append(1)
        raise FileNotFoundError("gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        location_mod.retry(missing, "x", sleep=waits.append)
    assert len(calls) == 1

    def down():
        raise TimeoutError("read timed out")

    waits.clear()
    with pytest.raises(ConnectionError, match="s3://b/k: still failing after 4 tries: TimeoutError"):
        location_mod.retry(down, "s3://b/k", delay=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0, 2.0]
    assert not location_mod.is_transient(PermissionError("denied"))
    assert location_mod.is_transient(OSError(location_mod.errno.EBUSY, "SlowDown"))


def test_remote_reads_retry_a_dropped_connection(tiny_dataset, bucket, s3_endpoint, monkeypatch):
    destination = Location(f"s3://{bucket}/flaky", endpoint_url=s3_endpoint)
    publish_mod.publish(str(tiny_dataset), destination, progress=False, log=lambda m: None)
    real = destination.fs.cat_file
    failures = iter([ConnectionResetError("connection reset by peer")])

    def drop_once(path, *args, **kwargs):
        error = next(failures, None)
        if error:
            raise error
        return real(path, *args, **kwargs)

    monkeypatch.setattr(destination.fs, "cat_file", drop_once)
    assert destination.read_bytes("tiny-000000.tar") == (tiny_dataset / "tiny-000000.tar").read_bytes()


# --- the trainer streams from s3:// ------------------------------------------
def _published(tiny_dataset, bucket, s3_endpoint, prefix="train") -> str:
    url = f"s3://{bucket}/{prefix}"
    publish_mod.publish(str(tiny_dataset), Location(url, endpoint_url=s3_endpoint), progress=False,
                        log=lambda m: None)
    return url


def _damage(s3, tiny_dataset, bucket, prefix, shard, truncate: bool) -> None:
    body = bytearray((tiny_dataset / shard["file"]).read_bytes())
    if truncate:
        del body[len(body) // 2:]
    else:
        body[len(body) // 3] ^= 0x55
    s3.put_object(Bucket=bucket, Key=f"{prefix}/{shard['file']}", Body=bytes(body))


def test_trainer_data_reads_verified_shards_from_s3(tiny_dataset, bucket, s3_endpoint, monkeypatch):
    from fractrain import data
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)  # how fractrain users name the endpoint
    url = _published(tiny_dataset, bucket, s3_endpoint)
    dataset = data.load(url, threads=2)
    assert dataset.images.shape == (16, 64, 64) and sorted(set(dataset.labels.tolist())) == list(range(16))
    local = data.load(str(tiny_dataset), threads=2)
    assert (dataset.images == local.images).all() and dataset.manifest_sha256 == local.manifest_sha256


@pytest.mark.parametrize("truncate", [False, True], ids=["corrupt", "truncated"])
def test_trainer_data_stops_on_a_damaged_remote_shard(tiny_dataset, s3, bucket, s3_endpoint, monkeypatch,
                                                      truncate):
    from fractrain import data
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    url = _published(tiny_dataset, bucket, s3_endpoint)
    shard = json.loads((tiny_dataset / "manifest.json").read_text())["shards"][1]
    _damage(s3, tiny_dataset, bucket, "train", shard, truncate)
    with pytest.raises(UserError) as caught:
        data.load(url, threads=2)
    message = str(caught.value)
    assert f"{url}/{shard['file']}" in message and "corrupt" in message
    assert (f"{len((tiny_dataset / shard['file']).read_bytes()) // 2} bytes" in message if truncate
            else shard["sha256"][:12] in message)


def _trainer_cli():
    """fractrain's command-line entry point, or None while it is not written."""
    import importlib.util

    if importlib.util.find_spec("fractrain.cli") is None:
        return None
    from fractrain import cli

    return getattr(cli, "main", None)


needs_trainer_cli = pytest.mark.skipif(
    _trainer_cli() is None, reason="fractrain's CLI (trainer/cli.py) is not written yet; these tests use the "
                                   "contract 'fractrain --shards URL --model vit_tiny --steps 2'")


def fractrain(capsys, *args: str) -> tuple[int, str]:
    """Run fractrain in this process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = _trainer_cli()([str(a) for a in args])
    except SystemExit as done:
        code = done.code
    return int(code or 0), capsys.readouterr().err


def _pretrain_args(url, out):
    # The default command is pretrain: ``fractrain --shards URL ...``.
    return ["--shards", url, "--model", "vit_tiny", "--steps", "2", "--batch-size", "4", "--input-size", "32",
            "--device", "cpu", "--augment", "cpu", "--workers", "0", "--out", out, "--no-progress"]


@needs_trainer_cli
def test_fractrain_streams_a_few_steps_from_s3(capsys, tiny_dataset, tmp_path, bucket, s3_endpoint, monkeypatch):
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    url = _published(tiny_dataset, bucket, s3_endpoint)
    code, err = fractrain(capsys, *_pretrain_args(url, tmp_path / "run"))
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["num_classes"] == 16


@needs_trainer_cli
def test_fractrain_stops_on_a_corrupt_remote_shard(capsys, tiny_dataset, tmp_path, s3, bucket, s3_endpoint,
                                                   monkeypatch):
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    url = _published(tiny_dataset, bucket, s3_endpoint)
    shard = json.loads((tiny_dataset / "manifest.json").read_text())["shards"][2]
    _damage(s3, tiny_dataset, bucket, "train", shard, truncate=False)
    code, err = fractrain(capsys, *_pretrain_args(url, tmp_path / "run"))
    assert code != 0
    line = err.strip().splitlines()[-1]
    assert f"{url}/{shard['file']}" in line and shard["sha256"][:12] in line


@needs_trainer_cli
def test_fractrain_on_a_missing_bucket_gives_one_line(capsys, tmp_path, s3_endpoint, monkeypatch):
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    code, err = fractrain(capsys, *_pretrain_args("s3://no-such-bucket/tiny", tmp_path / "run"))
    assert code == 2
    assert err == f"error: bucket 'no-such-bucket' does not exist at {s3_endpoint}\n"
    assert not (tmp_path / "run").exists()


def test_trainer_streams_verified_shards_from_s3(tiny_dataset, s3, bucket, s3_endpoint, monkeypatch, tmp_path):
    from fractrain.inputs import streaming
    from fractrain import pretrain
    from fractrain.config import defaults, override

    monkeypatch.setenv(location_mod.ENDPOINT_ENV, s3_endpoint)
    url = _published(tiny_dataset, bucket, s3_endpoint)
    # Two epochs of 8-sample steps, remote and local: the same samples, byte for byte.
    fed = {}
    for where in (url, str(tiny_dataset)):
        location, manifest, _ = streaming.data.read_manifest(where)
        schedule = streaming.StreamSchedule.from_manifest(manifest, 8, 0, window=4)
        fed[where] = list(streaming.ShardFeed(location, manifest, schedule, readers=1).steps(range(4)))
    assert [item.pngs for item in fed[url]] == [item.pngs for item in fed[str(tiny_dataset)]]
    summary = pretrain.run(override(defaults("pretrain"), {
        "data.shards": url, "data.input": "stream", "model.kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32,
                                                                     "num_heads": 2},
        "augment.input_size": 32, "batch_size": 8, "budget.epochs": None, "budget.steps": 2,
        "run.out": str(tmp_path / "run"), "run.workers": 0, "run.progress": False}))
    assert summary["input_path"] == "cpu-stream" and summary["steps"] == 2
    # A damaged remote shard stops the stream as it is read, naming it.
    shard = json.loads((tiny_dataset / "manifest.json").read_text())["shards"][2]
    _damage(s3, tiny_dataset, bucket, "train", shard, truncate=False)
    location, manifest, _ = streaming.data.read_manifest(url)
    schedule = streaming.StreamSchedule.from_manifest(manifest, 8, 0, window=4)
    with pytest.raises(UserError) as caught:
        list(streaming.ShardFeed(location, manifest, schedule, readers=1).steps(range(4)))
    assert f"{url}/{shard['file']} is corrupt" in str(caught.value)


# --- an endpoint that accepts connections and never answers ----------------
@pytest.fixture
def silent_endpoint():
    """``http://127.0.0.1:PORT`` of a socket that accepts and never answers."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)  # the kernel completes the handshakes; nobody ever reads
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


@pytest.mark.parametrize("command", ["verify", "publish", "info"])
def test_a_silent_endpoint_fails_with_one_line_naming_it(capsys, tiny_dataset, silent_endpoint, command):
    args = {"verify": ["verify", "s3://b/p", "--no-progress"],
            "publish": ["publish", tiny_dataset, "s3://b/p", "--no-progress"],
            "info": ["info", "s3://b/p"]}[command]
    code, _, err = fracbuild(capsys, *args, "--endpoint-url", silent_endpoint, "--timeout", "3")
    lines = err.strip().splitlines()
    assert code == 1, err
    assert lines[-1].startswith(f"failed: cannot reach {silent_endpoint}") and "timeout" in lines[-1].lower(), err
    # How many tries fit the 3 s budget depends on the machine's load (a
    # loaded one may spend it all on the first), so only their form is pinned.
    retries = lines[:-1]
    assert all(line.startswith("retry ") and "s3://b/p" in line for line in retries), err


@needs_trainer_cli
def test_fractrain_on_a_silent_endpoint_gives_one_line(capsys, tmp_path, silent_endpoint, monkeypatch):
    monkeypatch.setenv(location_mod.ENDPOINT_ENV, silent_endpoint)
    monkeypatch.setenv(location_mod.TIMEOUT_ENV, "3")
    code, err = fractrain(capsys, *_pretrain_args("s3://b/p", tmp_path / "run"))
    assert code == 1, err
    assert err.strip().splitlines()[-1].startswith(f"failed: cannot reach {silent_endpoint}"), err
    assert "Traceback" not in err


# --- two publishes to one prefix at once -------------------------------------
SLOW_PUBLISH = """
import os, sys, time
from fracbuild import publish
real, started = publish.upload_object, []

def slowed(*args, **kwargs):  # the first object at once (it marks the start), the rest once released
    if started:
        deadline = time.monotonic() + 60
        while not os.path.exists({release!r}) and time.monotonic() < deadline:
            time.sleep(0.01)
    else:
        open({marker!r}, "w").close()
    started.append(1)
    real(*args, **kwargs)

publish.upload_object = slowed
from fracbuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_concurrent_publishes_to_one_prefix_one_wins_and_the_prefix_verifies(
        capsys, tiny_dataset, tmp_path, s3, bucket, s3_endpoint):
    import subprocess
    import sys
    import time

    from conftest import build_tiny

    other = tmp_path / "other"
    build_tiny(other, seed=7)  # the same names, other bytes
    url, marker, release = f"s3://{bucket}/race", tmp_path / "slow-started", tmp_path / "release"
    common = [url, "--endpoint-url", s3_endpoint, "--no-progress", "--jobs", "1"]
    slow = subprocess.Popen([sys.executable, "-c", SLOW_PUBLISH.format(marker=str(marker), release=str(release)),
                             "publish", str(other), *common], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and slow.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists(), slow.stderr.read() if slow.poll() is not None else "the slow publish never started"
    # The slow one has claimed the empty prefix and is writing; the fast one starts now.
    fast = subprocess.run([sys.executable, "-m", "fracbuild.cli", "publish", str(tiny_dataset), *common],
                          stderr=subprocess.PIPE, text=True, timeout=120)
    release.touch()  # the slow one goes on, over a prefix the fast one has committed
    slow_err = slow.communicate(timeout=120)[1]
    outcomes = {"fast": (fast.returncode, fast.stderr), "slow": (slow.returncode, slow_err)}
    winners = [name for name, (code, _) in outcomes.items() if code == 0]
    assert winners == ["fast"], outcomes
    code, err = outcomes["slow"]
    assert code != 0 and len(err.strip().splitlines()) == 1 and url in err and "Traceback" not in err, err
    assert "another publish" in err and "run the same command again" not in err, err
    # The prefix is the winner's data set, whole.
    remote = s3.get_object(Bucket=bucket, Key="race/manifest.json")["Body"].read()
    assert remote == (tiny_dataset / "manifest.json").read_bytes()
    assert fracbuild(capsys, "verify", url, "--endpoint-url", s3_endpoint, "--no-progress")[0] == 0


def test_a_rerun_aborts_the_incomplete_uploads_a_killed_run_left(capsys, tiny_dataset, s3, bucket, s3_endpoint,
                                                                 monkeypatch):
    def start(key):
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 100)
        return upload

    start("tiny/tiny-000001.tar")  # a killed publish's
    start("tiny/notes.bin")  # not an object of this data set: someone else's
    start("elsewhere/tiny-000001.tar")  # not under the prefix
    monkeypatch.setattr(publish_mod, "STALE_UPLOAD_SECONDS", 0)
    code, _, err = publish_cli(capsys, tiny_dataset, f"s3://{bucket}/tiny", s3_endpoint)
    assert code == 0, err
    assert f"aborted 1 incomplete upload(s) left under s3://{bucket}/tiny" in err
    left = sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    assert left == ["elsewhere/tiny-000001.tar", "tiny/notes.bin"]


def test_a_young_incomplete_upload_may_be_a_running_publish_and_stays(capsys, tiny_dataset, s3, bucket,
                                                                     s3_endpoint, monkeypatch):
    s3.create_multipart_upload(Bucket=bucket, Key="tiny/tiny-000001.tar")
    # moto dates every upload in 2010: an age limit beyond that makes it "young".
    monkeypatch.setattr(publish_mod, "STALE_UPLOAD_SECONDS", 100 * 365 * 86400)
    code, _, err = publish_cli(capsys, tiny_dataset, f"s3://{bucket}/tiny", s3_endpoint)
    assert code == 0, err
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == ["tiny/tiny-000001.tar"]


def test_info_reads_an_s3_prefix_at_the_given_endpoint(capsys, tiny_dataset, bucket, s3_endpoint, monkeypatch):
    url = _published(tiny_dataset, bucket, s3_endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the option says where the server is
    code, out, err = fracbuild(capsys, "info", url, "--endpoint-url", s3_endpoint, "--json")
    assert code == 0, err
    assert json.loads(out)["num_samples"] == 16
