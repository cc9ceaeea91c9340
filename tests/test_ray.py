"""Builds and the category search on a real Ray (two CPUs, started here):
the same bytes as a local build, a killed worker retried, a killed driver
resumed, and Ray never imported by the local path; builds straight into a
local S3 server (moto) equal to a local build then published, and resumed
there."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fracbuild import location as location_mod
from fracbuild import ray_exec
from fracbuild import manifest as mf
from fracbuild import pool
from fracbuild.build import BuildSpec, run_build
from fracbuild.cli import main
from fracbuild.errors import BuildFailure
from fracbuild.generators.fractaldb import search as fractaldb_search
from fracbuild.ray_search import RaySearch
from fracbuild.remote_out import RemoteTarget

ray = pytest.importorskip("ray")

SEARCH = {"size": 48, "pad": 2, "iterations": 2000, "search_size": 64, "search_iterations": 3000}
SMALL = {  # kind -> (params, shard size): a few shards each
    "fractaldb": ({"num_categories": 2, "repeats": 1, "instances": 8, **SEARCH}, 4),
    "rcdb": ({"num_categories": 2, "instances": 3, "size": 48}, 2),
}
# Slow enough per sample (~30 ms) that a driver can be killed between its first and last shard.
SLOW_1PFRAC = ["--L", "60", "--size", "64", "--pad", "2", "--iterations", "1000000", "--search-trials", "1",
               "--shard-size", "2"]


@pytest.fixture(scope="module")
def cluster():
    """A Ray of two CPUs for this module; skipped where Ray cannot start."""
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024**2,
                 logging_level=logging.WARNING, log_to_driver=False)
    except Exception as error:  # no shared memory, no ports, ...: nothing to test against
        pytest.skip(f"Ray cannot start here: {error}")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _quiet(message: str) -> None:
    pass


def build(out: Path, kind: str, params: dict, shard_size: int, distributed=None, **options) -> dict:
    spec = BuildSpec(kind=kind, seed=3, params=params, prefix=kind, shard_size=shard_size)
    return run_build(spec, str(out), workers=1, progress=False, log=options.pop("log", _quiet),
                     distributed=distributed, **options)


def assert_same_data_set(ours: Path, reference: Path) -> None:
    """Every file byte for byte, except the manifest's timings (and the
    search's duration inside the system), which differ between any two builds."""
    names = sorted(p.name for p in reference.iterdir())
    assert sorted(p.name for p in ours.iterdir()) == names
    for name in names:
        if name == mf.MANIFEST_NAME:
            continue
        assert (ours / name).read_bytes() == (reference / name).read_bytes(), name

    def normalised(path: Path) -> dict:
        manifest = json.loads(path.read_text())
        manifest.pop("timings")
        manifest["system"].pop("search_seconds", None)
        return manifest

    assert normalised(ours / mf.MANIFEST_NAME) == normalised(reference / mf.MANIFEST_NAME)


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_ray_build_equals_local_build(cluster, tmp_path, kind):
    params, shard_size = SMALL[kind]
    build(tmp_path / "local", kind, params, shard_size)
    manifest = build(tmp_path / "ray", kind, params, shard_size, distributed=ray_exec.RayExecutor("local"))
    assert len(manifest["shards"]) >= 3
    assert_same_data_set(tmp_path / "ray", tmp_path / "local")


def test_worker_killed_mid_build_is_retried(cluster, tmp_path):
    params, shard_size = SMALL["rcdb"]
    marker = tmp_path / "killed-once"

    def kill_once(token, spec_box, plan):  # pickled by value into the Ray worker
        if plan.index == 1 and not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return ray_exec.render_one(token, spec_box, plan)

    build(tmp_path / "local", "rcdb", params, shard_size)
    executor = ray_exec.RayExecutor("local", max_retries=2, task=kill_once)
    build(tmp_path / "ray", "rcdb", params, shard_size, distributed=executor)
    assert marker.exists(), "the fault was never injected"
    assert_same_data_set(tmp_path / "ray", tmp_path / "local")


def test_shard_failing_past_its_retries_is_named(cluster, tmp_path):
    params, shard_size = SMALL["rcdb"]

    def always_killed(token, spec_box, plan):
        if plan.index == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return ray_exec.render_one(token, spec_box, plan)

    executor = ray_exec.RayExecutor("local", max_retries=0, task=always_killed)
    with pytest.raises(BuildFailure, match=r"shard rcdb-000002\.tar failed after 1 tries .*--resume"):
        build(tmp_path / "ray", "rcdb", params, shard_size, distributed=executor)
    assert not (tmp_path / "ray" / mf.MANIFEST_NAME).exists()


def test_resume_after_the_driver_is_killed(cluster, tmp_path):
    out = tmp_path / "ray"
    command = [sys.executable, "-m", "fracbuild.cli", "render", *SLOW_1PFRAC, "--out", str(out),
               "--ray", cluster, "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.tar")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
        stderr = driver.stderr.read().decode()
        driver.stderr.close()
    assert list(out.glob("*.tar")), f"no shard was written before the driver ended: {stderr}"
    assert not (out / mf.MANIFEST_NAME).exists(), "the build finished before the driver could be killed"

    assert main(["render", *SLOW_1PFRAC, "--out", str(tmp_path / "local"), "--workers", "1", "--no-progress"]) == 0
    finished = {p.name for p in out.glob("*.tar")}
    submitted = tmp_path / "submitted"

    def counted(token, spec_box, plan):
        with open(submitted, "a") as handle:
            handle.write(f"1p-frac-{plan.index:06d}.tar\n")
        return ray_exec.render_one(token, spec_box, plan)

    spec_args = {"kind": "1p-frac", "seed": 0, "prefix": "1p-frac", "shard_size": 2,
                 "params": {"num_classes": 60, "size": 64, "pad": 2, "iterations": 1_000_000, "search_trials": 1}}
    run_build(BuildSpec(**spec_args), str(out), resume=True, progress=False, log=_quiet,
              distributed=ray_exec.RayExecutor("local", task=counted))
    # Only missing shards go out, each once (a task of the killed driver may still land one meanwhile).
    rendered = submitted.read_text().split()
    assert rendered and len(rendered) == len(set(rendered))
    assert not set(rendered) & finished
    assert_same_data_set(out, tmp_path / "local")


@pytest.mark.parametrize("stream", ["seeded", "legacy"])
def test_distributed_search_finds_the_local_categories(cluster, stream):
    options = {"stream": stream, "seed": 1, "iterations": 3000, "size": 64, "pad": 2, "threshold": 0.2,
               "max_candidates": 400, "log": _quiet}
    local = fractaldb_search.search(5, threads=1, **options)
    distributed = RaySearch(ray, cpus=2, block=8).search(5, **options)
    for result in (local, distributed):
        result.pop("search_seconds")
    assert distributed == local
    assert len({c["candidate"] for c in local["categories"]}) == 5


def test_a_search_block_failing_past_its_retries_is_one_line(cluster):
    def broken(*args):
        raise ValueError("bad block")

    search = RaySearch(ray, cpus=2, block=8, max_retries=0, evaluate=broken)
    with pytest.raises(BuildFailure, match=r"^search: candidates 0\.\.7 failed on Ray \(ValueError\)"):
        search.search(2, stream="seeded", seed=1, iterations=3000, size=64, pad=2, threshold=0.2,
                      max_candidates=64, log=_quiet)


def test_local_build_never_imports_ray(tmp_path):
    script = ("import sys; from fracbuild.cli import main; "
              f"code = main(['render', '--L', '4', '--size', '32', '--pad', '1', '--iterations', '2000', "
              f"'--workers', '1', '--no-progress', '--out', {str(tmp_path / 'out')!r}]); "
              "print(code, 'ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["0", "False"], done.stderr


def test_ray_not_installed_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    code = main(["render", "--L", "4", "--out", str(tmp_path / "out"), "--ray"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ['error: --ray needs Ray, which is not installed (pip install "onepfrac[ray]")']
    assert not (tmp_path / "out").exists()


def test_a_build_failure_in_a_task_is_not_retried(cluster, tmp_path):
    params, shard_size = SMALL["rcdb"]
    tries = tmp_path / "tries"

    def never_passes(token, spec_box, plan):
        with open(tries, "a") as handle:
            handle.write(f"{plan.index}\n")
        raise BuildFailure(f"class {plan.first} never passed its fill check")

    executor = ray_exec.RayExecutor("local", max_retries=3, task=never_passes)
    with pytest.raises(BuildFailure, match=r"^class \d+ never passed its fill check$"):
        build(tmp_path / "ray", "rcdb", params, shard_size, distributed=executor)
    lines = tries.read_text().split()
    assert len(lines) == len(set(lines)), f"a shard was tried again: {lines}"


def test_a_shard_written_elsewhere_fails_the_build(cluster, tmp_path, monkeypatch):
    """A worker on a node that does not share --out: its shard never shows up here."""
    params, shard_size = SMALL["rcdb"]
    monkeypatch.setattr(ray_exec, "VISIBLE_SECONDS", 0.0)

    def written_elsewhere(token, spec_box, plan):
        result = ray_exec.render_one(token, spec_box, plan)
        os.remove(os.path.join(ray.get(spec_box[0]).out_dir, result.file))
        return result

    executor = ray_exec.RayExecutor("local", task=written_elsewhere)
    with pytest.raises(BuildFailure, match=r"--out must be a file system every node shares"):
        build(tmp_path / "ray", "rcdb", params, shard_size, distributed=executor)
    assert not (tmp_path / "ray" / mf.MANIFEST_NAME).exists()


@pytest.fixture
def s3_server(monkeypatch, tmp_path):
    """``(endpoint, boto3 client)`` of moto's S3 server on 127.0.0.1, with
    dummy credentials and no AWS configuration from this machine."""
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    for name in list(os.environ):
        if name.startswith("AWS_") or name == "FRACBUILD_ENDPOINT_URL":
            monkeypatch.delenv(name)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    server.stop()


def test_ray_build_published_to_s3_equals_the_local_build(cluster, tmp_path, s3_server):
    endpoint, client = s3_server
    client.create_bucket(Bucket="fracdata")
    options = ["--kind", "rcdb", "--categories", "2", "--instances", "3", "--size", "48", "--shard-size", "2",
               "--seed", "3", "--no-progress"]
    assert main(["render", *options, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    assert main(["render", *options, "--ray", "--out", str(tmp_path / "ray"),
                 "--publish", "s3://fracdata/rcdb", "--endpoint-url", endpoint]) == 0
    assert main(["verify", "s3://fracdata/rcdb", "--endpoint-url", endpoint, "--no-progress"]) == 0
    for path in sorted((tmp_path / "local").iterdir()):
        if path.name != mf.MANIFEST_NAME:
            remote = client.get_object(Bucket="fracdata", Key=f"rcdb/{path.name}")["Body"].read()
            assert remote == path.read_bytes(), path.name
    assert_same_data_set(tmp_path / "ray", tmp_path / "local")


@pytest.mark.parametrize("address, message", [("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
                                              ("nonsense", "expected auto or HOST:PORT"),
                                              ("auto", "no Ray cluster answers at 127.0.0.1:1")])
def test_an_address_without_a_cluster_is_one_line(tmp_path, capsys, monkeypatch, address, message):
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh `fracbuild` process
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # what `auto` finds: a cluster gone
    code = main(["render", "--L", "4", "--out", str(tmp_path / "out"), "--ray", address])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: --ray {address}: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


# --- --out s3://: every task puts its shard into the bucket itself ---------------
SECRET = "dummy-secret-never-printed"
RCDB_OPTIONS = ["--kind", "rcdb", "--categories", "2", "--instances", "3", "--size", "48", "--seed", "3",
                "--no-progress"]


def objects(client, bucket: str, prefix: str) -> dict[str, tuple[bytes, dict]]:
    """Name under ``prefix`` -> (bytes, user metadata) of every object there."""
    listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
    found = {}
    for entry in listed:
        answer = client.get_object(Bucket=bucket, Key=entry["Key"])
        found[entry["Key"][len(prefix) + 1:]] = (answer["Body"].read(), answer["Metadata"])
    return found


def assert_same_objects(ours: dict, reference: dict) -> None:
    """The same objects byte for byte, with the same metadata (sha256), the
    manifest up to what differs between any two builds."""
    assert sorted(ours) == sorted(reference)
    for name in reference:
        if name != mf.MANIFEST_NAME:
            assert ours[name] == reference[name], name

    def content(manifest: bytes) -> dict:
        manifest = json.loads(manifest)
        for key in ("timings", "environment", "tool"):
            manifest.pop(key)
        manifest["system"].pop("search_seconds", None)
        return manifest

    assert content(ours[mf.MANIFEST_NAME][0]) == content(reference[mf.MANIFEST_NAME][0])


def test_a_build_to_s3_equals_a_local_build_then_publish(cluster, tmp_path, s3_server):
    endpoint, client = s3_server
    client.create_bucket(Bucket="fracdata")
    s3 = ["--endpoint-url", endpoint]
    options = [*RCDB_OPTIONS, "--shard-size", "2"]
    assert main(["render", *options, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    assert main(["publish", str(tmp_path / "local"), "s3://fracdata/published", *s3, "--no-progress"]) == 0
    assert main(["render", *options, "--ray", "--out", "s3://fracdata/ray", *s3]) == 0
    # Without Ray: forked local workers, each with its own client (a process apart from this one's Ray).
    command = [sys.executable, "-m", "fracbuild.cli", "render", *options, "--workers", "2", "--out",
               "s3://fracdata/pool", *s3]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    published = objects(client, "fracdata", "published")
    assert len(published) == 5  # three shards, _info.json, manifest.json
    assert_same_objects(objects(client, "fracdata", "ray"), published)
    assert_same_objects(objects(client, "fracdata", "pool"), published)
    assert main(["verify", "s3://fracdata/ray", *s3, "--no-progress"]) == 0


def test_resume_at_s3_renders_exactly_the_missing_and_damaged_shards(cluster, tmp_path, s3_server):
    endpoint, client = s3_server
    client.create_bucket(Bucket="fracdata")
    options = [*RCDB_OPTIONS, "--shard-size", "1"]
    assert main(["render", *options, "--ray", "--out", "s3://fracdata/set", "--endpoint-url", endpoint]) == 0
    finished = objects(client, "fracdata", "set")
    manifest = json.loads(finished[mf.MANIFEST_NAME][0])
    # As a build interrupted after its shards: its state object, no _info.json, no manifest.
    state = {"spec": {"kind": "rcdb", "seed": 3, "params": manifest["params"], "prefix": "rcdb", "shard_size": 1},
             "system": manifest["system"], "search_seconds": 0.0}
    client.put_object(Bucket="fracdata", Key=f"set/{mf.BUILD_STATE_NAME}", Body=mf.to_json_text(state).encode())
    for name in (mf.MANIFEST_NAME, mf.TIMM_INFO_NAME, "rcdb-000000.tar"):
        client.delete_object(Bucket="fracdata", Key=f"set/{name}")
    client.put_object(Bucket="fracdata", Key="set/rcdb-000002.tar", Body=finished["rcdb-000002.tar"][0][:3000])
    client.put_object(Bucket="fracdata", Key="set/rcdb-000003.tar", Body=finished["rcdb-000004.tar"][0])
    submitted = tmp_path / "submitted"

    def counted(token, spec_box, plan):
        with open(submitted, "a") as handle:
            handle.write(f"{plan.index}\n")
        return ray_exec.render_one(token, spec_box, plan)

    spec = BuildSpec(kind="rcdb", seed=3, params=SMALL["rcdb"][0], prefix="rcdb", shard_size=1)
    run_build(spec, "s3://fracdata/set", resume=True, progress=False, log=_quiet, endpoint_url=endpoint,
              distributed=ray_exec.RayExecutor("local", task=counted))
    assert sorted(submitted.read_text().split()) == ["0", "2", "3"]  # missing, truncated, another shard's bytes
    resumed = objects(client, "fracdata", "set")
    assert mf.BUILD_STATE_NAME not in resumed
    assert_same_objects(resumed, finished)


@pytest.mark.parametrize("case", ["missing bucket", "unreachable endpoint", "with --publish"])
def test_a_bad_s3_out_is_one_line(cluster, capsys, monkeypatch, s3_server, case):
    endpoint, client = s3_server
    monkeypatch.setattr(location_mod, "RETRY_DELAY", 0.01)
    out, extra, code, line = {
        "missing bucket": ("s3://no-such-bucket/set", ["--endpoint-url", endpoint], 2,
                           "error: bucket 'no-such-bucket' does not exist at "),
        "unreachable endpoint": ("s3://fracdata/set", ["--endpoint-url", "http://127.0.0.1:1", "--timeout", "2"],
                                 1, "failed: cannot reach http://127.0.0.1:1"),
        "with --publish": ("s3://fracdata/set", ["--publish", "s3://fracdata/other"], 2,
                           "error: --publish needs a local --out; --out s3://fracdata/set already writes"),
    }[case]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    before = everything(client)
    assert main(["render", *RCDB_OPTIONS, "--ray", "--out", out, *extra]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(line), err
    assert SECRET not in "\n".join(err)
    assert all(earlier.startswith("retry ") for earlier in err[:-1]), err  # the retries say so, one line each
    assert everything(client) == before  # nothing was written


def test_the_drivers_credentials_reach_the_workers_but_no_repr(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    target = RemoteTarget.of("s3://fracdata/set", "http://127.0.0.1:9", 5)
    assert target.credentials == {"key": "key-id", "secret": SECRET}
    spec = pool.WorkerSpec("rcdb", SMALL["rcdb"][0], 3, {}, "", "rcdb", 6, target)
    assert "http://127.0.0.1:9" in repr(spec) and SECRET not in repr(spec)


def everything(client) -> dict[str, list[str]]:
    """Bucket -> its keys, of the whole (test) store."""
    return {bucket["Name"]: sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket["Name"]).get("Contents", []))
            for bucket in client.list_buckets()["Buckets"]}
