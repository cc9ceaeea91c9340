"""Named recipes: the README's recipe table pins every value of each recipe
file, the drop-last epoch mode, per-epoch lr updates with the released
scaling, command-line precedence, and an exact resume under ``paper``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fractrain import pretrain
from fractrain.cli import main
from fractrain.config import OptimConfig, override, recipe_defaults
from fractrain.optim import create_optimizer, create_schedule, lr_position
from fractrain.recipes import names
from fractrain.schedule import EpochSchedule, make_schedule

REPO = Path(__file__).resolve().parent.parent
TINY_VIT = {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
TINY_ARGS = ["--model", "vit_tiny", "--input-size", "32"] + [a for k, v in TINY_VIT.items()
                                                             for a in ("--model-arg", f"{k}={v}")]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- the README's recipe tables ------------------------------------------------
def recipe_tables() -> list[tuple[str, list[str], list[list[str]]]]:
    """(command, recipe names, rows of cells) for every table the README marks
    with ``<!-- recipe-table: COMMAND NAME... -->``."""
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    tables = []
    for i, line in enumerate(lines):
        marker = re.match(r"<!-- recipe-table: (\S+) (.+) -->", line.strip())
        if not marker:
            continue
        rows = []
        for row in lines[i + 3:]:  # marker, header, separator
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in row.strip().strip("|").split("|")])
        tables.append((marker.group(1), marker.group(2).split(), rows))
    return tables


def cell_value(cell: str):
    """A table cell as the value it names: `0.5` -> 0.5, `[0.5, 0.5]` -> [0.5, 0.5],
    `null` -> None, `true` -> True, "—" -> the marker string itself."""
    text = cell.strip("`")
    if text == "—":
        return "—"
    return yaml.safe_load(text)


def value_at(config, key: str):
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return list(value) if isinstance(value, tuple) else value


def same(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b


def test_readme_tables_cover_both_commands():
    tables = recipe_tables()
    assert [(command, recipes) for command, recipes, _ in tables] == [
        ("pretrain", ["paper", "exact-epochs", "short"]), ("finetune", ["paper-finetune", "exact-epochs-finetune"])]
    assert sorted(r for _, recipes, _ in tables for r in recipes) == names()


@pytest.mark.parametrize("table", range(2))
def test_every_recipe_value_is_the_readme_tables(table):
    command, recipes, rows = recipe_tables()[table]
    keys = [row[1].strip("`") for row in rows]
    assert len(keys) == len(set(keys)), "a key listed twice"
    for name_index, name in enumerate(recipes):
        config = recipe_defaults(command, name)
        checked = set()
        for row in rows:
            key, cell = row[1].strip("`"), row[3 + name_index]
            if cell == "—":
                continue
            assert same(value_at(config, key), cell_value(cell)), f"{name}: {key} is {value_at(config, key)!r}, " \
                                                                   f"the README says {cell}"
            checked.add(key)
        # Every value the recipe file sets is in the table (so the table cannot fall behind the file).
        from fractrain.recipes import load

        payload = load(name)
        set_keys = {f"{section}.{key}" if isinstance(values, dict) else section
                    for section, values in payload.items() if section != "command"
                    for key in (values if isinstance(values, dict) else [None])}
        assert set_keys <= checked, f"{name} sets {sorted(set_keys - checked)} that the README table lacks"


def test_the_paper_recipes_equal_the_released_code_except_stated_deviations():
    for _command, recipes, rows in recipe_tables():
        for row in rows:
            released, paper, why = row[2], row[3], row[3 + len(recipes)]
            if released == "—" and paper == "—":
                continue
            if not same(cell_value(released), cell_value(paper)):
                assert why.startswith("deviation"), f"{recipes[0]}: {row[1]} differs from the released code " \
                                                    "without a stated deviation"


def test_short_differs_from_paper_only_where_the_table_says_why():
    command, recipes, rows = recipe_tables()[0]
    paper, short = recipes.index("paper"), recipes.index("short")
    differ = []
    for row in rows:
        if not same(cell_value(row[3 + paper]), cell_value(row[3 + short])):
            differ.append(row[1].strip("`"))
            assert "`short`" in row[3 + len(recipes)], f"short: {row[1]} differs from paper without a reason"
    # What the paper's Table 9 found to matter stays on: random crops and Mixup/CutMix.
    config = recipe_defaults(command, "short")
    assert config.augment.crop and config.augment.scale[0] < 1.0
    assert config.augment.mixes and config.augment.mixup_alpha > 0 and config.augment.cutmix_alpha > 0
    assert differ and "augment.mixup_alpha" not in differ and "augment.cutmix_alpha" not in differ


# --- drop-last epochs --------------------------------------------------------------
@pytest.mark.parametrize("n, batch, world", [(16, 6, 2), (17, 4, 4), (1000, 256, 8), (12, 12, 3)])
def test_drop_last_epochs_are_whole_batches_of_a_fresh_permutation(n, batch, world):
    ranks = [EpochSchedule(n, batch, seed=3, world_size=world, rank=r, mode="drop-last") for r in range(world)]
    per_epoch = n // batch
    assert all(s.steps_per_epoch == per_epoch for s in ranks)
    orders = []
    for epoch in range(3):
        seen = []
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            parts = [s.indices(step) for s in ranks]
            assert all(len(p) == batch // world for p in parts)  # equal batches per rank
            seen += [int(i) for p in parts for i in p]
        assert len(seen) == per_epoch * batch and len(set(seen)) == len(seen)  # each sample at most once
        assert all(0 <= i < n for i in seen)
        orders.append(seen)
        assert ranks[0].epochs_done((epoch + 1) * per_epoch) == epoch + 1
        assert ranks[0].epoch_at(epoch * per_epoch + per_epoch // 2) == pytest.approx(epoch + (per_epoch // 2) / per_epoch)
    if n > batch:
        assert orders[0] != orders[1]  # a fresh permutation every epoch


def test_exact_and_drop_last_budgets_at_the_released_setting():
    paper = recipe_defaults("pretrain", "paper")
    exact = recipe_defaults("pretrain", "exact-epochs")
    drop = make_schedule(paper, 1000)
    assert drop.steps_per_epoch == 3 and paper.total_steps(drop) == 240_000  # 80,000 epochs x 3 steps
    assert exact.total_steps(make_schedule(exact, 1000)) == 312_500  # ceil(80,000 x 1,000 / 256)
    from fractrain.errors import UserError

    with pytest.raises(UserError, match="hold no whole global batch of 256"):
        make_schedule(paper, 100)


# --- the learning rate ---------------------------------------------------------------
def lrs(cfg: OptimConfig, schedule: EpochSchedule, steps: int) -> list[float]:
    model = torch.nn.Linear(4, 2)
    optimizer = create_optimizer(model, cfg, schedule.global_batch)
    scheduler = create_schedule(optimizer, cfg, steps, schedule.steps_per_epoch, schedule.global_batch)
    values = []
    for step in range(steps):
        scheduler.step_update(lr_position(cfg, schedule, step))
        values.append(optimizer.param_groups[0]["lr"])
    return values


def test_paper_lr_is_scaled_by_batch_over_512_and_changes_once_per_epoch():
    cfg = recipe_defaults("pretrain", "paper").optim
    schedule = EpochSchedule(1000, 256, seed=0, mode="drop-last")  # 3 steps per epoch
    values = lrs(cfg, schedule, 30 * 3)  # a 30-epoch run
    epochs = [values[e * 3:(e + 1) * 3] for e in range(30)]
    assert all(len(set(epoch)) == 1 for epoch in epochs)  # constant within an epoch
    assert len({epoch[0] for epoch in epochs}) == 30  # and new every epoch
    assert epochs[0][0] == pytest.approx(5e-7)  # warm-up start 1e-6 x 256 / 512
    assert epochs[1][0] == pytest.approx(5e-7 + (5e-4 - 5e-7) / 5)  # 5 warm-up epochs
    # after warm-up, cosine from 1e-3 x 256 / 512 to the floor 1e-5 x 256 / 512 over the 30 epochs
    assert epochs[5][0] == pytest.approx(5e-6 + 0.5 * (5e-4 - 5e-6) * (1 + math.cos(math.pi * 5 / 30)))
    assert epochs[-1][0] > 5e-6  # the cosine ends at the scaled floor, after the last epoch
    long = lrs(cfg, schedule, 3 * 400)
    assert long[-1] == pytest.approx(5e-6, rel=1e-2)  # the floor 1e-5 x 256 / 512


def test_exact_epochs_lr_changes_every_step_unscaled():
    cfg = recipe_defaults("pretrain", "exact-epochs").optim
    schedule = EpochSchedule(1000, 256, seed=0)
    values = lrs(cfg, schedule, 60)
    assert values[0] == pytest.approx(1e-6) and len(set(values[:20])) == 20  # warm-up 5 x 1000 / 256 -> 20 steps
    assert values[20] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 20 / 60)))


# --- the command line --------------------------------------------------------------
def saved_config(out: Path) -> dict:
    return yaml.safe_load((out / "config.yaml").read_text())


def test_cli_default_recipe_is_paper_and_flags_override_it(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--epochs", "2", "--lr", "2e-3",
                 "--workers", "0", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    saved = saved_config(out)
    assert saved["recipe_name"] == "paper" and saved["optim"]["lr"] == 0.002  # the flag wins
    assert saved["optim"]["lr_base_batch"] == 512 and saved["budget"]["epoch_mode"] == "drop-last"
    assert saved["run"]["precision"] == "auto-fp16" and saved["optim"]["lr_update"] == "epoch"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["precision"] == "fp32"  # 2 epochs x floor(16 / 8); CPU: fp32
    log = capsys.readouterr().err
    assert "fp16 autocast and its gradient scaler are CUDA-only" in log

    other = tmp_path / "exact"
    assert main(["pretrain", "--recipe", "exact-epochs", "--shards", str(tiny_dataset), *TINY_ARGS, "-b", "6",
                 "--epochs", "2", "--workers", "0", "--no-progress", "--device", "cpu", "--out", str(other)]) == 0
    assert saved_config(other)["budget"]["epoch_mode"] == "exact"
    assert json.loads((other / "summary.json").read_text())["steps"] == 6  # ceil(2 x 16 / 6)


def test_cli_short_recipe_runs_with_its_values(tiny_dataset, tmp_path):
    out = tmp_path / "short"
    assert main(["--recipe", "short", "--shards", str(tiny_dataset), *TINY_ARGS, "-b", "8", "--epochs", "2",
                 "--workers", "0", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    saved = saved_config(out)
    assert saved["recipe_name"] == "short" and saved["optim"]["lr_base_batch"] is None
    assert saved["augment"]["scale"] == [0.5, 1.0] and saved["augment"]["mix_prob"] == 0.5
    assert saved["augment"]["auto_augment"] is None and saved["budget"]["epoch_mode"] == "drop-last"
    assert json.loads((out / "summary.json").read_text())["steps"] == 4  # 2 epochs x floor(16 / 8)


def test_cli_recipe_errors_are_one_line(tiny_dataset, tmp_path, capsys):
    for args, expected in ((["--recipe", "nosuch"], "unknown recipe 'nosuch'; choose from"),
                           (["--recipe", "paper-finetune"], "recipe 'paper-finetune' is for 'finetune', not 'pretrain'"),
                           (["-b", "32"], "the data set's 16 samples hold no whole global batch of 32")):
        assert main(["--shards", str(tiny_dataset), *TINY_ARGS, "--workers", "0", "--no-progress",
                     "--out", str(tmp_path / "run"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
        assert not (tmp_path / "run").exists()


def test_paper_finetune_batch_is_per_rank(monkeypatch):
    from fractrain.cli import resolve

    monkeypatch.setenv("WORLD_SIZE", "8")
    cfg = resolve("finetune", {})
    assert cfg.batch_per_rank == 96 and cfg.batch_size == 768
    assert cfg.optim.scaled_lr(cfg.batch_size) == pytest.approx(0.015)  # 0.01 x 768 / 512
    given = resolve("finetune", {"batch_size": 64})
    assert given.batch_per_rank is None and given.batch_size == 64
    assert resolve("finetune", {"recipe": "exact-epochs-finetune"}).batch_size == 96
    assert resolve("probe", {}).recipe_name is None


# --- an exact resume under the paper recipe ------------------------------------------
def paper_config(shards, out, **changes):
    values = {"data.shards": str(shards), "model.kwargs": TINY_VIT, "augment.input_size": 32, "batch_size": 6,
              "budget.epochs": 6.0, "run.out": str(out), "run.workers": 0, "run.progress": False,
              "run.log_every": 1, "run.ckpt_every": 2.0, "optim.warmup_epochs": 2.0}
    values.update(changes)
    return override(recipe_defaults("pretrain", "paper"), values)


def test_paper_recipe_resumes_bit_exactly(tiny_dataset, tmp_path):
    # 16 samples, batch 6: 2 steps per drop-last epoch (4 samples sit out), 12 steps.
    whole = pretrain.run(paper_config(tiny_dataset, tmp_path / "whole"))
    assert whole["steps"] == 12 and whole["epochs"] == 6.0

    def kill_at_7(step):
        if step == 7:
            raise KeyboardInterrupt

    cut = paper_config(tiny_dataset, tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(cut, on_step=kill_at_7)
    assert (tmp_path / "cut" / "ckpt-000000004.pt").exists()
    resumed = pretrain.run(override(cut, {"run.workers": 2}), resume="auto")
    assert resumed["resumed_from_step"] == 4 and resumed["steps"] == 12
    a = torch.load(tmp_path / "whole" / "final.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "final.pt", weights_only=True)["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    assert [lr[s] == lr[s + 1] for s in range(1, 12, 2)] == [True] * 6  # both steps of an epoch
    assert len({lr[s] for s in range(1, 13, 2)}) == 6
    assert lr[1] == pytest.approx(1e-6 * 6 / 512)
    assert np.isfinite(whole["last_loss"])


def test_auto_fp16_is_fp16_on_cuda_and_fp32_on_the_cpu():
    from fractrain.loop import Stepper, precision_note, resolve_precision

    assert resolve_precision("auto-fp16", torch.device("cuda")) == "fp16"
    assert resolve_precision("auto-fp16", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert precision_note("auto-fp16", "fp32") and not precision_note("auto-fp16", "fp16")
    # fp16 is what turns the gradient scaler on (Stepper builds it from the resolved precision).
    from fractrain.distributed import Context

    ctx = Context(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    model = torch.nn.Linear(2, 2)
    scalers = {p: Stepper(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.MSELoss(), ctx, p).scaler
               for p in ("fp16", "fp32", "bf16")}
    assert [scalers[p].is_enabled() for p in ("fp16", "fp32", "bf16")] == [True, False, False]
