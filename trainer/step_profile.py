"""Where a training step's device time goes: a few steps under torch.profiler,
summarised per CUDA stream (``fractrain bench --profile-steps``).

The question it answers for the GPU input path: is the step bound by the
device (the streams' kernels cover the wall time) or by the host (gaps), and
how much device time do the augmentation's kernels (on their side stream)
take beside the model's (on the default stream)?
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
from collections import defaultdict
from typing import Any, Callable, Iterable, Iterator

import torch

# Chrome-trace categories of work that occupies a device stream.
_DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")


def _union_length(intervals: Iterable[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals, overlaps counted once."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def summarize(events: list[dict[str, Any]], steps: int, wall_s: float, top: int = 12) -> dict[str, Any]:
    """A chrome trace's ``traceEvents`` (torch.profiler's export) -> per-step figures in ms:

    * wall_ms: wall time per step;
    * device_busy_ms: time some stream had work (kernels, copies, memsets);
    * streams: {stream id: busy ms per step}, busiest first;
    * top: the ``top`` kernels by total time, with their stream and count per step.
    """
    work = [e for e in events if e.get("ph") == "X" and e.get("cat") in _DEVICE_CATEGORIES]
    by_stream: dict[str, list[tuple[float, float]]] = defaultdict(list)
    by_kernel: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in work:
        stream = str(e.get("args", {}).get("stream", "?"))
        start, length = float(e["ts"]), float(e.get("dur", 0.0))  # microseconds
        by_stream[stream].append((start, start + length))
        by_kernel[(stream, e.get("name", "?"))].append(length)
    per_step = 1e-3 / steps  # microseconds in total -> ms per step
    streams = {s: round(_union_length(iv) * per_step, 3) for s, iv in by_stream.items()}
    kernels = sorted(by_kernel.items(), key=lambda item: -sum(item[1]))[:top]
    return {
        "steps": steps,
        "wall_ms": round(wall_s * 1e3 / steps, 3),
        "device_busy_ms": round(_union_length(iv for ivs in by_stream.values() for iv in ivs) * per_step, 3),
        "streams": dict(sorted(streams.items(), key=lambda item: -item[1])),
        "top": [{"stream": s, "name": name[:100], "ms": round(sum(d) * per_step, 3), "count": len(d) / steps}
                for (s, name), d in kernels],
    }


def profile_steps(step: Callable[..., Any], batches: Iterator[tuple], steps: int, device: torch.device,
                  trace_path: str | None = None) -> dict[str, Any]:
    """Run ``step(*next(batches))`` ``steps`` times under torch.profiler and
    summarize() it. trace_path: also keep the chrome trace there (gzipped
    when the name ends in .gz; open it in Perfetto)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step(*next(batches))
        sync()
        wall = time.perf_counter() - started
    handle, path = tempfile.mkstemp(suffix=".json")
    os.close(handle)
    try:
        prof.export_chrome_trace(path)
        with open(path, "rb") as f:
            raw = f.read()
    finally:
        os.unlink(path)
    if trace_path:
        with (gzip.open if trace_path.endswith(".gz") else open)(trace_path, "wb") as f:
            f.write(raw)
    return summarize(json.loads(raw)["traceEvents"], steps, wall)


def host_profile(step: Callable[..., Any], batches: Iterator[tuple], steps: int, top: int = 15) -> dict[str, Any]:
    """Run ``step(*next(batches))`` ``steps`` times under cProfile: where the
    training thread's own time goes (Python functions and the C calls they
    make, e.g. a CUDA call that blocks), without the device trace. Returns
    {"steps", "wall_ms" (per step), "top": [{"function", "ms" (own time per
    step), "cumulative_ms", "calls" (per step), "caller" (the function
    that spent most of it calling this one)}]}, by own time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _ in range(steps):
        step(*next(batches))
    profiler.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, primitive calls, own s, cumulative s, callers)}
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]

    def where(function: tuple) -> str:
        file, line, name = function
        return f"{os.path.basename(file)}:{line}({name})"

    def main_caller(callers: dict) -> str | None:
        # callers: {function: (calls, primitive calls, own s, cumulative s)}; the one with most own time.
        return where(max(callers.items(), key=lambda item: item[1][2])[0]) if callers else None

    return {"steps": steps, "wall_ms": round(wall / steps * 1e3, 3),
            "top": [{"function": where(function), "ms": round(own / steps * 1e3, 3),
                     "cumulative_ms": round(cumulative / steps * 1e3, 3), "calls": round(calls / steps, 1),
                     "caller": main_caller(callers)}
                    for function, (_, calls, own, cumulative, callers) in rows]}


def describe_host(path: str, summary: dict[str, Any]) -> list[str]:
    """Log lines for one path's host_profile summary."""
    lines = [f"host profile {path}: {summary['wall_ms']:.2f} ms/step wall over {summary['steps']} steps "
             "(own ms / cumulative ms / calls per step, function <- its main caller)"]
    lines += [f"  {k['ms']:7.3f} {k['cumulative_ms']:8.3f} {k['calls']:6g}  {k['function']}"
              + (f"  <- {k['caller']}" if k["caller"] else "") for k in summary["top"]]
    return lines


def describe(path: str, summary: dict[str, Any]) -> list[str]:
    """Log lines for one path's summary."""
    streams = ", ".join(f"stream {s} {ms:.2f}" for s, ms in summary["streams"].items()) or "no device work"
    lines = [f"profile {path}: {summary['wall_ms']:.2f} ms/step wall, device busy {summary['device_busy_ms']:.2f} "
             f"({streams}) over {summary['steps']} steps"]
    lines += [f"  {k['ms']:7.3f} ms x{k['count']:g} stream {k['stream']}: {k['name']}" for k in summary["top"]]
    return lines
