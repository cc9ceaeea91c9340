"""Publish benchmark against a local S3 server (moto, on 127.0.0.1): a
first publish with 1 and with N upload threads, then the two kinds of
re-run (reading every object back, and --trust-metadata).

    python benchmarks/publish_bench.py                   # L = 256, 256x256, shards of 32
    python benchmarks/publish_bench.py --L 1000 --jobs 8

The server is moto's pure-Python one, so the absolute MB/s say more about
it than about a real store; read the figures as ratios (threads vs one,
re-run vs first run). Prints a table on stderr and one JSON line on stdout.
Never talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                  AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)

import boto3  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from fracbuild.build import BuildSpec, run_build  # noqa: E402
from fracbuild.location import Location  # noqa: E402
from fracbuild.publish import publish  # noqa: E402


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--L", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "shards")
            spec = BuildSpec(kind="1p-frac", seed=0, params={"num_classes": args.L, "size": args.size},
                             prefix="bench", shard_size=args.shard_size)
            build_s, manifest = timed(lambda: run_build(spec, source, workers=os.cpu_count() or 1,
                                                        progress=False, log=lambda m: None))
            total = sum(os.path.getsize(os.path.join(source, f)) for f in os.listdir(source))
            rows = {}
            for jobs in sorted({1, args.jobs}):
                bucket = f"bench-{jobs}"
                client.create_bucket(Bucket=bucket)
                where = Location(f"s3://{bucket}/set", endpoint_url=endpoint)
                rows[f"first, {jobs} thread(s)"] = timed(lambda: publish(source, where, jobs=jobs, progress=False,
                                                                         log=lambda m: None))[0]
            where = Location(f"s3://bench-{args.jobs}/set", endpoint_url=endpoint)
            rows["re-run, read back"] = timed(lambda: publish(source, where, jobs=args.jobs, progress=False,
                                                              log=lambda m: None))[0]
            rows["re-run, --trust-metadata"] = timed(lambda: publish(source, where, jobs=args.jobs,
                                                                     trust_metadata=True, progress=False,
                                                                     log=lambda m: None))[0]
    finally:
        server.stop()

    print(f"{len(manifest['shards'])} shards + 2 JSON files, {total / 1e6:.1f} MB (built in {build_s:.1f} s)",
          file=sys.stderr)
    for name, seconds in rows.items():
        print(f"  {name:<26} {seconds:7.2f} s  {total / 1e6 / seconds:7.1f} MB/s", file=sys.stderr)
    print(json.dumps({"objects": len(manifest["shards"]) + 2, "bytes": total, "cpus": os.cpu_count(),
                      "seconds": rows}))


if __name__ == "__main__":
    main()
