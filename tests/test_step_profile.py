"""fractrain.step_profile: the per-stream summary of a profiled step."""

import gzip
import json

import torch

from fractrain import step_profile


def kernel(stream, name, ts, dur, cat="kernel"):  # ts, dur in ms here; the trace's unit is microseconds
    return {"ph": "X", "cat": cat, "name": name, "ts": ts * 1e3, "dur": dur * 1e3, "args": {"stream": stream}}


def test_summarize_counts_overlaps_once_per_stream_and_overall():
    events = [
        kernel(7, "gemm", 0, 10), kernel(7, "gemm", 5, 10),       # stream 7 busy 0..15
        kernel(13, "resize", 12, 6), kernel(13, "lut", 30, 2),    # stream 13 busy 8 in all
        kernel(7, "copy", 40, 4, cat="gpu_memcpy"),
        {"ph": "X", "cat": "cpu_op", "name": "aten::add", "ts": 0, "dur": 1e5},  # host work: not device time
        {"ph": "i", "cat": "kernel", "name": "marker", "ts": 1},                 # not a duration event
    ]
    summary = step_profile.summarize(events, steps=2, wall_s=0.1)
    assert summary["wall_ms"] == 50.0
    assert summary["streams"] == {"7": (15 + 4) / 2, "13": 8 / 2}
    assert list(summary["streams"]) == ["7", "13"]  # busiest first
    # 0..18 (gemm, gemm, resize), 30..32, 40..44
    assert summary["device_busy_ms"] == (18 + 2 + 4) / 2
    top = summary["top"][0]
    assert (top["stream"], top["name"], top["count"]) == ("7", "gemm", 1.0) and top["ms"] == 20 / 2


def test_profile_steps_on_cpu_runs_every_step_and_keeps_the_trace(tmp_path):
    calls = []
    batches = iter([(torch.ones(3),)] * 5)
    trace = tmp_path / "trace.json.gz"
    summary = step_profile.profile_steps(lambda x: calls.append(float((x * 2).sum())), batches, 3,
                                         torch.device("cpu"), str(trace))
    assert calls == [6.0, 6.0, 6.0] and len(list(batches)) == 2
    assert summary["steps"] == 3 and summary["wall_ms"] > 0
    assert summary["device_busy_ms"] == 0 and summary["streams"] == {}  # no device on the CPU
    assert "traceEvents" in json.loads(gzip.open(trace).read())
    lines = step_profile.describe("gpu", summary)
    assert lines[0].startswith("profile gpu:") and "no device work" in lines[0]


def test_host_profile_runs_every_step_and_names_where_the_thread_spent_its_time():
    import time

    def slow_helper():
        time.sleep(0.01)  # the thread's time, spent (waiting) in a C call

    calls = []

    def step(x):
        calls.append(x)
        slow_helper()

    batches = iter([(1,), (2,), (3,), (4,)])
    summary = step_profile.host_profile(step, batches, 3, top=5)
    assert calls == [1, 2, 3] and next(batches) == (4,)
    assert summary["steps"] == 3 and summary["wall_ms"] >= 10
    assert len(summary["top"]) <= 5
    sleep = next(row for row in summary["top"] if "sleep" in row["function"])
    assert sleep["ms"] >= 9 and sleep["calls"] == 1.0  # per step
    assert "slow_helper" in sleep["caller"]
    helper = [row for row in summary["top"] if "slow_helper" in row["function"]]
    assert not helper or helper[0]["cumulative_ms"] >= sleep["ms"]
    lines = step_profile.describe_host("gpu", summary)
    assert lines[0].startswith("host profile gpu:") and any("sleep" in line for line in lines[1:])
