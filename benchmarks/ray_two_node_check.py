"""Two Ray nodes on this machine (``ray start --head`` and ``ray start
--address``, one CPU each), a small FractalDB build with ``--ray auto``
through them, and the same build without Ray: every file must match, the
manifest up to its timings. A manual check of the cluster path (too slow
and too many processes for the test suite).

    RAY_AUTH_MODE=token python benchmarks/ray_two_node_check.py

Both nodes are started in their own process groups and stopped at the end
(SIGTERM, which lets Ray drain them). Prints one JSON line; exit 1 on a
mismatch.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = ["--kind", "fractaldb", "--categories", "3", "--instances", "20", "--size", "64", "--iterations", "20000",
         "--search-size", "64", "--search-iterations", "3000", "--shard-size", "5", "--no-progress"]
NODE = ["--block", "--num-cpus", "1", "--object-store-memory", str(100 * 1024**2), "--disable-usage-stats"]
# The `ray` command of this interpreter's environment, found without an activated venv.
RAY = os.path.join(os.path.dirname(sys.executable), "ray")
PROBE = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
         "print(sum(n['Alive'] for n in ray.nodes()))")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alive_nodes(address: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, address], capture_output=True, text=True, timeout=60)
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else 0


def wait_for(address: str, nodes: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while alive_nodes(address) < nodes:
        if time.monotonic() > deadline:
            raise SystemExit(f"{nodes} Ray node(s) did not come up at {address} in {seconds:.0f} s")
        time.sleep(2)


def same_files(ours: str, reference: str) -> list[str]:
    """Names whose bytes differ (the manifest compared without its timings)."""
    differ = []
    for name in sorted(os.listdir(reference)):
        a, b = os.path.join(ours, name), os.path.join(reference, name)
        if name == "manifest.json":
            left, right = json.load(open(a)), json.load(open(b))
            for manifest in (left, right):
                manifest.pop("timings")
                manifest["system"].pop("search_seconds", None)
            if left != right:
                differ.append(name)
        elif not os.path.exists(a) or open(a, "rb").read() != open(b, "rb").read():
            differ.append(name)
    return differ


def _forget_cluster(address: str) -> None:
    """Remove the note `ray start --head` leaves for ``ray.init()`` (which
    `ray stop` would remove), so later local Rays do not look for this one."""
    note = os.path.join(tempfile.gettempdir(), "ray", "ray_current_cluster")
    try:
        with open(note) as handle:
            if handle.read().strip() == address:
                os.remove(note)
    except OSError:
        pass


def main() -> int:
    address = f"{socket.gethostbyname(socket.gethostname())}:{free_port()}"
    nodes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as scratch:
        log = open(os.path.join(scratch, "nodes.log"), "w")
        try:
            nodes.append(subprocess.Popen([RAY, "start", "--head", "--port", address.split(":")[1],
                                           "--include-dashboard=false", *NODE], stdout=log, stderr=log,
                                          start_new_session=True))
            wait_for(address, 1)
            nodes.append(subprocess.Popen([RAY, "start", "--address", address, *NODE], stdout=log, stderr=log,
                                          start_new_session=True))
            wait_for(address, 2)
            started = time.perf_counter()
            ray_run = subprocess.run(["fracbuild", "render", *BUILD, "--ray", "auto",
                                      "--out", os.path.join(scratch, "ray")], capture_output=True, text=True)
            ray_seconds = time.perf_counter() - started
            local_run = subprocess.run(["fracbuild", "render", *BUILD, "--workers", "1",
                                        "--out", os.path.join(scratch, "local")], capture_output=True, text=True)
        finally:
            for node in reversed(nodes):
                os.killpg(node.pid, signal.SIGTERM)
            for node in reversed(nodes):
                node.wait(timeout=90)
            _forget_cluster(address)
        if ray_run.returncode or local_run.returncode:
            print(ray_run.stderr[-2000:], local_run.stderr[-2000:], file=sys.stderr)
            return 1
        differ = same_files(os.path.join(scratch, "ray"), os.path.join(scratch, "local"))
        print(json.dumps({"nodes": 2, "files": len(os.listdir(os.path.join(scratch, "local"))),
                          "differ": differ, "ray_wall_seconds": ray_seconds}))
        return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
