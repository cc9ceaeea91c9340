"""How many categories a streamed batch mixes, against a uniformly shuffled
one: the streamed order's shuffle window bounds the mixing when shards
hold consecutive instances of one category (FractalDB, the contour kinds).

Only the order is computed (StreamSchedule, no data): FractalDB-1k's layout
(1,000 categories x 1,000 instances, category-major, shards of 256).

    python benchmarks/stream_mixing.py
    python benchmarks/stream_mixing.py --windows 8192,32768,131072 --ranks 8 --batch 1024

Prints the median distinct categories per rank's batch over 60 steps as a
markdown table on stderr and JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

from fractrain.schedule import EpochSchedule
from fractrain.inputs.stream_schedule import StreamSchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--categories", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--ranks", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1024, help="global batch")
    parser.add_argument("--windows", default="8192,32768,131072")
    args = parser.parse_args()
    n = args.categories * args.instances
    counts = [args.shard_size] * (n // args.shard_size) + ([n % args.shard_size] if n % args.shard_size else [])
    steps = range(0, 60 * 37, 37)

    def distinct(schedule) -> float:
        return statistics.median(len(np.unique(schedule.indices(t) // args.instances)) for t in steps)

    rows = [{"order": "in memory (uniform)",
             "categories": distinct(EpochSchedule(n, args.batch, 0, args.ranks, 0))}]
    for window in [int(w) for w in args.windows.split(",")]:
        schedule = StreamSchedule(n, args.batch, 0, args.ranks, 0, shard_counts=counts, window=window)
        rows.append({"order": f"streamed, window {window}", "categories": distinct(schedule)})
    print(f"\n| order | distinct categories in a rank's batch of {args.batch // args.ranks} |\n|---|---|",
          file=sys.stderr)
    for row in rows:
        print(f"| {row['order']} | {row['categories']:.0f} |", file=sys.stderr)
    print(json.dumps({"n": n, "shard_size": args.shard_size, "ranks": args.ranks, "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
