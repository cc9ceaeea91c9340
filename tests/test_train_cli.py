"""fractrain's command line on bad input: one line ``error: ...`` on stderr,
exit code 2, and no run folder left behind (certainly none that looks
finished)."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from fractrain.cli import main

TINY = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
        "--model-arg", "embed_dim=64", "--model-arg", "num_heads=2", "-b", "8", "--steps", "4", "--workers", "0",
        "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def fails(capsys, argv, message, out=None):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err and err[-1].startswith("error: ") and message in err[-1], err
    if out is not None:
        assert not out.exists(), f"{out} left behind"
    return err[-1]


def test_missing_and_invalid_manifest(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    fails(capsys, ["--shards", str(empty), *TINY, "--out", str(out)], "no manifest at", out)
    (empty / "manifest.json").write_text("{broken")
    fails(capsys, ["--shards", str(empty), *TINY, "--out", str(out)], "is not valid JSON", out)


@pytest.mark.parametrize("damage, message", [("delete", "is missing"), ("corrupt", "is corrupt")])
def test_missing_or_corrupt_shard_is_named(tiny_dataset, tmp_path, capsys, damage, message):
    root = tmp_path / "shards"
    shutil.copytree(tiny_dataset, root)
    name = json.loads((root / "manifest.json").read_text())["shards"][2]["file"]
    if damage == "delete":
        (root / name).unlink()
    else:
        raw = bytearray((root / name).read_bytes())
        raw[len(raw) // 3] ^= 0x55
        (root / name).write_bytes(bytes(raw))
    out = tmp_path / "run"
    line = fails(capsys, ["--shards", str(root), *TINY, "--out", str(out)], message, out)
    assert name in line


def test_unknown_model_lists_close_matches(tiny_dataset, tmp_path, capsys):
    line = fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--model", "vit_bse"], "unknown model 'vit_bse'")
    assert "vit_base" in line


def test_batch_not_divisible_by_the_world_size(tiny_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun would set it; checked before joining the group
    out = tmp_path / "run"
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "-b", "7", "--out", str(out)],
          "--batch-size 7 is not divisible by the world size 2", out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_gpu_requested_where_there_is_none(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--device", "cuda", "--out", str(out)],
          "no CUDA GPU is available", out)
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--precision", "fp16", "--out", str(out)],
          "fp16 needs a CUDA device", out)


def test_checkpoint_of_another_model_for_finetune(tiny_dataset, tmp_path, capsys):
    pre = tmp_path / "pre"
    assert main(["--shards", str(tiny_dataset), *TINY, "--out", str(pre)]) == 0
    capsys.readouterr()
    folder = tmp_path / "images" / "a"
    folder.mkdir(parents=True)
    out = tmp_path / "ft"
    fails(capsys, ["finetune", "--init", str(pre / "final.pt"), "--model", "vit_small", "--train", str(folder.parent),
                   "--val", str(folder.parent), "--out", str(out)], "is for model vit_tiny_patch16_224", out)
    not_ckpt = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(2)}, not_ckpt)
    fails(capsys, ["finetune", "--init", str(not_ckpt), "--train", str(folder.parent), "--val", str(folder.parent),
                   "--out", str(out)], "is not a fractrain checkpoint", out)
    # An unfinished run in the way: needs --resume auto.
    (pre / "summary.json").unlink()
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--out", str(pre)], "holds an unfinished run")


def test_downstream_folder_without_images(tmp_path, capsys):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "train" / "dog").mkdir(parents=True)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("no image here")
    out = tmp_path / "run"
    fails(capsys, ["finetune", "--scratch", "--model", "vit_tiny", "--train", str(tmp_path / "train"),
                   "--val", str(tmp_path / "train"), "--out", str(out)], "no images in", out)
    fails(capsys, ["finetune", "--train", str(tmp_path / "train"), "--val", str(tmp_path / "train"),
                   "--out", str(out)], "needs --init CKPT", out)


def test_option_errors_are_one_line(tiny_dataset, capsys):
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--aug-off", "mixup,sparkle"], "unknown augmentation sparkle")
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--epochs", "2"], "give one of --epochs, --samples, --steps")
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--resume", "/no/such.pt"], "no such checkpoint file")
    fails(capsys, ["--shards", str(tiny_dataset), *TINY, "--model-arg", "depth"], "expected KEY=VALUE")
    fails(capsys, ["pretrain", *TINY], "--shards is required")


def test_help_states_units_and_defaults(capsys):
    assert main(["pretrain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("Global batch: samples per optimizer step", "[default: 256]", "[default: 0.001]",
                     "Linear warm-up length, epochs. [default: 5]", "rand-m9-mstd0.5-inc1", "[default: 80000]",
                     "Table 9"):
        assert expected in text, expected
    assert main(["finetune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: sgd]" in text and "[default: 0.01]" in text and "[default: 0.485 0.456 0.406]" in text


@pytest.mark.parametrize("blocked", ["torch", "yaml"])
def test_builder_only_install_says_to_install_the_trainer_extra(tmp_path, blocked):
    # A builder-only install lacks the train extra: hide one of its modules
    # from a fresh interpreter (None in sys.modules makes its import fail).
    import subprocess
    import sys

    code = (f"import sys; sys.modules[{blocked!r}] = None; "
            "sys.argv = ['fractrain', '--shards', 'nowhere', '--out', sys.argv[1]]; "
            "import runpy; runpy.run_module('fractrain', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert 'pip install "onepfrac[train]"' in lines[0] and blocked in lines[0]
    assert not (tmp_path / "run").exists()


def test_batch_that_cannot_fit_in_memory_is_refused_before_it_starts(tiny_dataset, tmp_path, capsys):
    # A hundred million samples per step: no machine running this test has
    # the memory; the check measures the model and refuses before decoding.
    # Exact epochs: a drop-last epoch of 16 samples holds no such batch, a refusal of its own.
    out = tmp_path / "run"
    line = fails(capsys, ["--shards", str(tiny_dataset), *TINY, "-b", "100000000", "--device", "cpu",
                          "--epoch-mode", "exact", "--out", str(out)], "--batch-size 100000000 needs about", out)
    assert "GB are available: use --batch-size" in line and line.endswith("or less, or a GPU")
    fitting = int(line.split("use --batch-size ")[1].split()[0])
    assert 2 <= fitting < 100000000 and fitting % 2 == 0  # even: the recipe mixes pairs


def test_memory_refusal_says_to_use_a_gpu_when_no_batch_fits():
    from fractrain import resources

    need = resources.Estimate(fixed=3 * 10**9, per_sample=10**9, parts={"weights and optimizer": 3 * 10**9})
    with pytest.raises(resources.UserError, match=r"use a GPU \(or a smaller --model\)$"):
        resources.check_fits(need, 2 * 10**9, global_batch=8, world_size=1, even=True, device=torch.device("cpu"))
    with pytest.raises(resources.UserError, match="use --batch-size 6 or less, or a GPU$"):
        resources.check_fits(need, 12 * 10**9, global_batch=64, world_size=1, even=True,
                             device=torch.device("cpu"))
    resources.check_fits(need, 20 * 10**9, global_batch=8, world_size=1, even=True, device=torch.device("cpu"))


def test_run_folder_first_then_decoding_progress_and_a_cpu_time_forecast(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [a for a in TINY if a != "--no-progress"]
    argv[argv.index("--steps") + 1] = "8"
    assert main(["--shards", str(tiny_dataset), *argv, "--device", "cpu", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"run folder: {out}"
    assert "decoding: 100%" in err and "16/16" in err  # the images, counted as the shards decode
    forecast = next(line for line in err.splitlines() if "on the CPU a step takes" in line)
    assert re.search(r"a step takes [0-9.e+-]+ s: 4 steps to go, about \d+:\d\d:\d\d$", forecast), forecast


# Every bad input: one line "error: ...", exit 2, the message naming what the
# user typed. {data}: the tiny data set; {empty}: an empty file; {garbage}: random
# bytes; {objects}: a torch file holding Python objects; {images}: an ImageFolder.
BAD_INPUTS = [
    (["probe", "--init", "{empty}", "--train", "{images}", "--val", "{images}"],
     "{empty} is not a fractrain checkpoint (the file is empty)"),
    (["finetune", "--init", "{garbage}", "--train", "{images}", "--val", "{images}"],
     "{garbage} is not a fractrain checkpoint (corrupt, truncated or not written by torch.save)"),
    (["probe", "--init", "{objects}", "--train", "{images}", "--val", "{images}"],
     "{objects} is not a fractrain checkpoint (it holds Python objects other than tensors"),
    (["--shards", "{data}", *TINY, "--resume", "{empty}"], "{empty} is not a fractrain checkpoint"),
    (["--shards", "{data}", *TINY, "--ckpt-minutes", "-1"], "--ckpt-minutes must be >= 0"),
    (["--shards", "{data}", *TINY, "--lr", "0.5", "--resume", "{checkpoint}"],
     "cannot resume from {checkpoint}: it was made with --lr 0.001, this run asks 0.5"),
    (["--shards", "{data}", *TINY, "--model-arg", "depth=3", "--resume", "{checkpoint}"],
     "it was made with --model-arg {{"),
    (["--shards", "{data}", *TINY, "--steps", "2", "--epochs", "3"], "give one of --epochs, --samples, --steps"),
    (["--shards", "{data}", *TINY, "--aug-off", "sparkle"], "unknown augmentation sparkle"),
    (["pretrain", *TINY], "--shards is required"),
    (["bench", "--shards", "{data}", "--paths", "gpu,fast"], "--paths takes"),
    (["bench", "--shards", "{data}", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["bench", "--shards", "{data}", "--workers", "-1"], "--workers must be >= 0, got -1"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[" ".join(a[:3]) for a, _ in BAD_INPUTS])
def test_bad_inputs_are_one_line_naming_the_flag(tiny_dataset, tmp_path, capsys, argv, message):
    import argparse
    import os

    (tmp_path / "images" / "a").mkdir(parents=True)
    names = {"data": str(tiny_dataset), "empty": str(tmp_path / "EMPTYFILE"), "garbage": str(tmp_path / "g.pt"),
             "objects": str(tmp_path / "o.pt"), "images": str(tmp_path / "images")}
    (tmp_path / "EMPTYFILE").write_bytes(b"")
    (tmp_path / "g.pt").write_bytes(os.urandom(3000))
    torch.save({"options": argparse.Namespace(a=1)}, tmp_path / "o.pt")
    if any("{checkpoint}" in part for part in argv):
        assert main(["--shards", str(tiny_dataset), *TINY, "--out", str(tmp_path / "pre")]) == 0
        capsys.readouterr()
    names["checkpoint"] = str(tmp_path / "pre" / "final.pt")
    out = tmp_path / "run"
    out_flag = [] if argv[0] == "bench" else ["--out", str(out)]
    assert main([part.format(**names) for part in argv] + out_flag) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message.format(**names) in err[0], err
    assert not out.exists()


def test_memory_measurement_leaves_the_model_and_generators_as_they_were():
    from fractrain import resources

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Dropout(0.5),
                              torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.ones(1, 3, 8, 8))  # materialise the lazy layer
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = torch.get_rng_state()
    saved = resources.saved_activation_bytes(net, 8, torch.device("cpu"), 2)
    assert saved > 2 * 3 * 8 * 8 * 4  # at least the input the convolution keeps
    assert torch.equal(torch.get_rng_state(), state)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_help_defaults_written_one_way_and_no_arguments_prints_the_help(capsys):
    assert main(["pretrain", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: True]" not in text and "[default: False]" not in text
    assert "Progress bar on stderr. [default: on]" in text and "torch.compile the model. [default: off]" in text
    assert "the shards. [required]" in text and "--ckpt-minutes" in text
    assert main(["finetune", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "one pass over the --train set" in text and "one image per class" not in text
    assert main(["bench", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: as pretrain's --workers on the timed device]" in text and "[default: no-compile]" not in text
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: fractrain") and "error:" not in err


def test_one_epoch_run_draws_its_final_bar_once_and_says_1_step(tiny_dataset, tmp_path, capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    argv[argv.index("-b") + 1] = "16"  # the whole tiny set: one step is one epoch
    argv.remove("--steps")
    argv.remove("4")
    assert main(["--shards", str(tiny_dataset), *argv, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.count("1/1 [") == 1, err
    assert "1 rank x 16; 1 step = 16 samples = 1 drop-last epoch;" in err and "done: 1 step in" in err
    final_bar = err.index("1/1 [")
    assert final_bar < err.index("epoch 1/1 step 1/1")  # above the last lines, never below them


def test_cgroup_room_reads_v2_and_v1_limits(tmp_path):
    from fractrain.resources import _cgroup_room

    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("8000000000\n")
    (v2 / "memory.current").write_text("3000000000\n")
    (v2 / "memory.stat").write_text("anon 2000000000\ninactive_file 500000000\n")
    assert _cgroup_room(str(v2)) == 5_500_000_000
    (v2 / "memory.max").write_text("max\n")
    assert _cgroup_room(str(v2)) is None
    v1 = tmp_path / "v1" / "memory"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("4000000000\n")
    (v1 / "memory.usage_in_bytes").write_text("1000000000\n")
    (v1 / "memory.stat").write_text("total_inactive_file 0\n")
    assert _cgroup_room(str(tmp_path / "v1")) == 3_000_000_000
    assert _cgroup_room(str(tmp_path / "none")) is None


def test_cpu_forecast_speaks_of_days_and_years_when_it_comes_to_that(monkeypatch):
    from fractrain import loop

    clock = iter([100.0, 100.0 + 3 * 60.0])  # after the first step, then three steps of a minute each
    monkeypatch.setattr(loop.time, "perf_counter", lambda: next(clock))
    forecast = loop.Forecast(0, 6_562_500)
    assert [forecast.after(step) for step in (1, 2, 3)] == [None, None, None]
    line = forecast.after(4)
    assert line == "on the CPU a step takes 60 s: 6562496 steps to go, about 12 years"
    assert loop.Forecast(0, 10, enabled=False).after(1) is None
