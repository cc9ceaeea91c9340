"""fractrain pre-training runs on a tiny data set: learning, exact resume,
the run folder, the configuration round trip, the GPU input-path adapter
and the benchmark."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml

from fractrain import pretrain
from fractrain.cli import main
from fractrain.config import defaults, from_dict, override
from fractrain.recipe import SWITCHES

# A ViT small enough for a CPU test: 32 px input, 8 px patches (16 tokens), 2 blocks.
TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
TINY_ARGS = ["--model", "vit_tiny", "--input-size", "32"] + [a for k, v in TINY_VIT.items()
                                                             for a in ("--model-arg", f"{k}={v}")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(shards, out, **changes):
    values = {"data.shards": str(shards), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 8,
              "budget.epochs": None, "budget.steps": 12, "run.out": str(out), "run.workers": 0,
              "run.progress": False, "run.log_every": 2, "run.ckpt_every": 2.0}
    values.update(changes)
    return override(defaults("pretrain"), values)


def records(out):
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("input_path", ["cpu", "gpu"])
def test_loss_falls_within_a_few_dozen_steps(tiny_dataset, tmp_path, input_path):
    # Augmentation off and a full-epoch batch: the model must learn the 16
    # classes apart. (Average pooling learns this faster than a class token.)
    # Both input paths (the GPU one runs here with device cpu): a path that
    # paired images with the wrong labels would never learn.
    cfg = tiny_config(tiny_dataset, tmp_path / "run", **{
        "run.input_path": input_path,
        "batch_size": 16, "budget.steps": 50, "aug_off": SWITCHES, "model.drop_path": 0.0,
        "model.kwargs": {**TINY_VIT, "embed_dim": 128, "global_pool": "avg", "class_token": False},
        "optim.lr": 1e-3, "optim.lr_base_batch": None, "optim.warmup_epochs": 0.0, "optim.min_lr": 1e-4,
        "run.log_every": 5})
    summary = pretrain.run(cfg)
    losses = [r["loss"] for r in records(tmp_path / "run") if "loss" in r]
    assert losses[0] > 2.6  # about ln 16 at the start
    assert summary["last_loss"] < 0.6 * losses[0], losses
    assert min(losses[-3:]) < min(losses[:3]) - 1.0, losses


def test_run_folder_holds_config_metrics_events_and_checkpoints(tiny_dataset, tmp_path):
    out = tmp_path / "run"
    summary = pretrain.run(tiny_config(tiny_dataset, out))
    names = set(os.listdir(out))
    assert {"config.yaml", "metrics.jsonl", "summary.json", "final.pt", "tb"} <= names
    assert sorted(n for n in names if n.startswith("ckpt-")) == ["ckpt-000000004.pt", "ckpt-000000008.pt"]
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out / "tb"))
    first = records(out)[0]
    assert {"step", "epoch", "loss", "lr", "images_per_s"} <= set(first)
    assert summary["steps"] == 12 and summary["epochs"] == 6.0 and summary["global_batch"] == 8
    final = torch.load(out / "final.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "step", "epoch", "rng", "config", "manifest_sha256",
            "model_name", "num_classes"} <= set(final)
    assert final["step"] == 12 and final["num_classes"] == 16 and final["model_name"] == "vit_tiny_patch16_224"
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in final["model"])  # unwrapped
    # The saved config.yaml resolves back to the same configuration, with the
    # input settings left to their defaults as decided (on the CPU: no fused
    # kernels, op-by-op), not null.
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert from_dict(saved) == tiny_config(tiny_dataset, out, **{"run.fuse_augment": False,
                                                                 "run.gpu_augment_mode": "op-by-op"})
    assert None not in (saved["run"]["workers"], saved["run"]["fuse_augment"], saved["run"]["gpu_augment_mode"])


def test_stop_and_resume_gives_the_same_weights(tiny_dataset, tmp_path):
    # The full recipe (RandAugment, Mixup/CutMix, erasing, drop path): every
    # random draw must line up after the resume.
    whole = pretrain.run(tiny_config(tiny_dataset, tmp_path / "whole"))

    def kill_at_7(step):
        if step == 7:
            raise KeyboardInterrupt

    cut = tiny_config(tiny_dataset, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cut, on_step=kill_at_7)
    assert not (tmp_path / "cut" / "summary.json").exists()
    assert (tmp_path / "cut" / "ckpt-000000004.pt").exists()  # the last checkpoint before the kill
    # Resume with DataLoader workers this time: batches do not depend on them.
    resumed = pretrain.run(override(cut, {"run.workers": 2}), resume="auto")
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 12
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert whole["last_loss"] == pytest.approx(resumed["last_loss"], abs=0, rel=1e-6)
    steps = [r["step"] for r in records(tmp_path / "cut") if "loss" in r]
    assert steps == sorted(set(steps)), "records past the checkpoint are not duplicated"


def test_resume_refuses_another_model_class_count_or_recipe(tiny_dataset, tmp_path, capsys):
    import sys

    sys.path.insert(0, os.path.dirname(__file__))
    from conftest import build_tiny

    out = tmp_path / "run"
    pretrain.run(tiny_config(tiny_dataset, out))
    final = str(out / "final.pt")
    base = ["--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--steps", "12", "--workers", "0",
            "--no-progress", "--out", str(tmp_path / "again"), "--recipe", "exact-epochs"]
    assert main(base + ["--resume", final, "--model", "vit_small"]) == 2
    assert "is for model vit_tiny_patch16_224, not vit_small_patch16_224" in capsys.readouterr().err
    eight = tmp_path / "eight"
    build_tiny(eight, num_classes=8)
    assert main([*base[:1], str(eight), *base[2:], "--resume", final]) == 2
    assert "has 16 classes, this data set has 8" in capsys.readouterr().err
    assert main(base + ["--resume", final, "--lr", "0.5"]) == 2
    assert "it was made with --lr 0.001, this run asks 0.5" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_gpu_input_path_adapter_with_a_stand_in(tiny_dataset, tmp_path):
    calls = []

    class FakeAugment:
        """Records what the adapter passes; plans deterministic noise."""

        def __init__(self, recipe, num_classes, device, **options):
            self.size, self.num_classes = recipe.input_size, num_classes
            calls.append(("options", options))

        def plan(self, shape, generator):
            calls.append(("plan", shape, generator.device.type))
            return torch.rand(shape[0], 3, self.size, self.size, generator=generator)

        def apply(self, images, targets, plan):
            calls.append(("apply", images.dtype, tuple(images.shape), targets.dtype))
            return plan.to(images.device), torch.nn.functional.one_hot(targets, self.num_classes).float()

    cfg = tiny_config(tiny_dataset, tmp_path / "a", **{"run.input_path": "gpu"})
    summary = pretrain.run(cfg, augment_cls=FakeAugment)
    assert summary["input_path"] == "gpu" and len(calls) == 25
    assert calls[:3] == [("options", {"fuse": False}),  # the CPU default
                         ("plan", (8, 1, 64, 64), "cpu"), ("apply", torch.uint8, (8, 1, 64, 64), torch.int64)]
    calls.clear()
    again = pretrain.run(override(cfg, {"run.out": str(tmp_path / "b"), "run.fuse_augment": True}),
                         augment_cls=FakeAugment)
    assert again["last_loss"] == summary["last_loss"]  # seeded per step
    assert calls[0] == ("options", {"fuse": True})


def test_gpu_input_path_with_the_real_augmentation_on_cpu(tiny_dataset, tmp_path):
    from fractrain.inputs.defaults import gpu_augment_class

    if gpu_augment_class() is None:
        pytest.skip("fractrain.gpu_augment is not available")
    summary = pretrain.run(tiny_config(tiny_dataset, tmp_path / "run", **{"run.input_path": "gpu",
                                                                          "budget.steps": 4}))
    assert summary["input_path"] == "gpu" and summary["last_loss"] > 0


def test_cli_pretrains_as_written_and_resume_auto_finishes(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--steps", "4", "--workers", "0",
            "--no-progress", "--out", str(out)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "global batch 8 = 1 rank x 8" in err and "done: 4 steps" in err
    assert main(args) == 2
    assert "holds a finished run" in capsys.readouterr().err
    assert main(args + ["--resume", "auto"]) == 0
    assert "nothing to do" in capsys.readouterr().err


def test_bench_runs_the_three_inputs_on_cpu(tiny_dataset, capsys):
    args = ["bench", "--shards", str(tiny_dataset), *TINY_ARGS, "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--windows", "1", "--workers", "0", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("model_images_per_s", "gpu_augment_images_per_s", "cpu_augment_images_per_s"):
        assert result[key] > 0
    assert result["cpu_vs_model"] > 0 and result["gpu_vs_model"] > 0
    assert "gpu_serial_augment_images_per_s" not in result  # only on request
    assert result["fuse_augment"] is False and result["plan_workers"] == 0  # the CPU default; --workers 0
    assert result["gpu_augment_mode"] == "op-by-op"  # the CPU default
    assert result["high_priority_step"] is False
    assert main(args[:-3] + ["--workers", "3", "--json", "--paths", "gpu-serial"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["gpu_serial_augment_images_per_s"] > 0 and result["model_images_per_s"] is None
    assert result["plan_workers"] == 2 and result["gpu_resize"] == "fp32"  # the CPU default
    assert main(args[:-1] + ["--paths", "gpu", "--gpu-resize", "taps", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["gpu_resize"] == "taps" and result["gpu_augment_images_per_s"] > 0
    assert main(args + ["--paths", "model,tpu"]) == 2
    assert "--paths takes model, gpu, gpu-serial, cpu" in capsys.readouterr().err


def test_bench_profiles_steps_and_keeps_each_window(tiny_dataset, capsys, tmp_path):
    args = ["bench", "--shards", str(tiny_dataset), *TINY_ARGS, "--batch-size", "8", "--steps", "2",
            "--warmup", "1", "--windows", "2", "--workers", "0", "--paths", "model,gpu", "--json"]
    assert main(args + ["--profile-steps", "2", "--trace-dir", str(tmp_path / "traces"),
                        "--gpu-augment-mode", "static"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert set(result["windows_images_per_s"]) == {"model", "gpu"}
    assert all(len(rates) == 2 and min(rates) > 0 for rates in result["windows_images_per_s"].values())
    assert result["profile"]["gpu"]["steps"] == 2 and result["profile"]["model"]["wall_ms"] > 0
    assert result["gpu_augment_mode"] == "static"
    assert "profile gpu:" in captured.err
    # The training thread's time per timed step, without a profiler: fetching the batch, then the step.
    for path in ("model", "gpu"):
        times = result["host_ms"][path]
        assert set(times) == {"input_wall", "input_cpu", "step_wall", "step_cpu", "gc_ms", "gc_count"}
        assert times["gc_ms"] >= 0 and times["gc_count"] >= 0
        assert times["step_wall"] > 0 and times["step_cpu"] > 0
    assert result["host_ms"]["gpu"]["input_cpu"] > result["host_ms"]["model"]["input_cpu"]  # it augments there
    assert "host_profile" not in result
    assert sorted(p.name for p in (tmp_path / "traces").iterdir()) == ["trace-gpu.json.gz", "trace-model.json.gz"]
    assert main(args + ["--trace-dir", str(tmp_path / "t2")]) == 2
    assert "--trace-dir needs --profile-steps" in capsys.readouterr().err
    assert main(args[:-3] + ["--paths", "gpu", "--json", "--host-profile-steps", "2"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])["host_profile"]["gpu"]
    assert summary["steps"] == 2 and summary["top"] and "host profile gpu:" in captured.err
    assert main(args + ["--host-profile-steps", "-1"]) == 2
    assert "--host-profile-steps must be >= 0" in capsys.readouterr().err


def test_bench_windows_take_turns(tiny_dataset, capsys, monkeypatch):
    from fractrain import bench

    assert [bench.window_order(["model", "gpu", "cpu"], w) for w in range(3)] == [
        ["model", "gpu", "cpu"], ["cpu", "gpu", "model"], ["model", "gpu", "cpu"]]
    # The run times every path's first window before any path's second.
    order = []
    timed = bench.time_window

    def spy(stepper, *args, **kwargs):
        order.append(id(stepper))
        return timed(stepper, *args, **kwargs)

    monkeypatch.setattr(bench, "time_window", spy)
    args = ["bench", "--shards", str(tiny_dataset), *TINY_ARGS, "--batch-size", "8", "--steps", "1",
            "--warmup", "0", "--windows", "3", "--workers", "0", "--paths", "cpu,model,gpu", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(len(rates) == 3 for rates in result["windows_images_per_s"].values())
    # model and gpu take turns; the CPU path (its workers work ahead) comes after them, alone.
    first, second, third = order[0], order[1], order[6]
    assert len({first, second, third}) == 3
    assert order == [first, second, second, first, first, second, third, third, third]


def test_adam_and_adamw_are_fused_on_cuda_only():
    from types import SimpleNamespace

    import torch

    from fractrain.config import OptimConfig
    from fractrain.optim import create_optimizer, fused_option

    on_gpu, on_cpu = SimpleNamespace(is_cuda=True), SimpleNamespace(is_cuda=False)
    assert fused_option("adamw", [on_gpu, on_gpu]) == {"fused": True} == fused_option("AdamW", [on_gpu])
    assert fused_option("adam", [on_gpu]) == {"fused": True}
    assert fused_option("adamw", [on_gpu, on_cpu]) == {} == fused_option("adamw", [])
    assert fused_option("sgd", [on_gpu]) == {} == fused_option("lamb", [on_gpu])
    optimizer = create_optimizer(torch.nn.Linear(4, 4), OptimConfig(), 256)  # on the CPU: timm's default
    assert isinstance(optimizer, torch.optim.AdamW) and not optimizer.defaults["fused"]
    if torch.cuda.is_available():
        assert create_optimizer(torch.nn.Linear(4, 4).cuda(), OptimConfig(), 256).defaults["fused"] is True


def test_bench_gc_clock_counts_the_collections_inside_only():
    import gc

    from fractrain.bench import _GcClock

    with _GcClock() as clock:
        gc.collect()
        gc.collect(0)
    assert clock.collections == 2 and clock.seconds > 0
    assert clock._callback not in gc.callbacks
    gc.collect()
    assert clock.collections == 2


def test_bench_step_stream_is_a_high_priority_cuda_stream_or_nothing():
    import contextlib

    import torch

    from fractrain.bench import step_stream

    for high, device in ((True, "cpu"), (False, "cpu"), (False, "cuda")):  # no CUDA needed to decide
        assert isinstance(step_stream(high, torch.device(device)), contextlib.nullcontext)
    if torch.cuda.is_available():
        default = torch.cuda.current_stream()
        with step_stream(True, torch.device("cuda")):
            stream = torch.cuda.current_stream()
            assert stream != default and stream.priority == min(torch.cuda.Stream.priority_range())
        assert torch.cuda.current_stream() == default


def test_bench_builds_its_model_and_optimizer_from_the_pretrain_config(tiny_dataset, monkeypatch):
    import dataclasses

    from fractrain import bench, config as configs

    seen = {}
    create_model, create_optimizer = bench.models.create, bench.create_optimizer

    def model_spy(name, num_classes, input_size, drop_path, kwargs):
        seen["model"] = (name, input_size, drop_path, kwargs)
        return create_model(name, num_classes, input_size, drop_path, kwargs)

    def optimizer_spy(net, optim, batch_size):
        seen["optim"] = (optim, batch_size)
        return create_optimizer(net, optim, batch_size)

    monkeypatch.setattr(bench.models, "create", model_spy)
    monkeypatch.setattr(bench, "create_optimizer", optimizer_spy)
    cfg = configs.override(configs.defaults("pretrain"), {
        "model.name": "vit_tiny_patch16_224", "model.drop_path": 0.25, "model.kwargs": {"depth": 1},
        "data.shards": str(tiny_dataset), "augment.input_size": 32, "batch_size": 8, "optim.lr": 0.5,
        "run.device": "cpu", "run.workers": 0})
    result = bench.run(cfg, steps=1, warmup=0, windows=1, paths=("model",))
    assert result["batch_size"] == 8 and result["input_size"] == 32
    assert seen["model"] == ("vit_tiny_patch16_224", 32, 0.25, {"depth": 1})
    assert seen["optim"] == (dataclasses.replace(configs.defaults("pretrain").optim, lr=0.5), 8)
