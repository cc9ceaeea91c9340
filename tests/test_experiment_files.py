"""The experiment files shipped in benchmarks/ load, every row's data set is
a valid fracbuild build, and every command line they make (the file's flags
followed by each row's) parses and resolves to a configuration (nothing runs)."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from fracbuild.generators import get_kind
from fractrain import experiment
from fractrain.cli import cli, resolve

FILES = sorted((REPO_ROOT / "benchmarks").glob("*.yaml"))


def _resolves(command: str, argv: list[str]):
    """click parses ``argv`` for ``command`` (names, types, choices) and the
    values resolve to a TrainConfig (budgets, ranges, the recipe), or raises."""
    with cli.commands[command].make_context(command, argv, resilient_parsing=False) as ctx:
        values = dict(ctx.params)
    values.pop("resume", None)
    return resolve(command, values)


def test_there_are_experiment_files():
    names = {path.name for path in FILES}
    assert {"table5_paper.yaml", "table6_paper.yaml", "table7_paper.yaml", "table9_paper.yaml",
            "fig3_paper.yaml"} <= names, names


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_experiment_file_loads_builds_and_parses(path):
    spec = experiment.load(str(path))
    data = spec["data"]
    for row in spec["rows"]:
        start = ["--init", "CKPT.pt"] + (["--scratch"] if row.get("scratch") else [])
        if not row.get("scratch"):
            get_kind(data.get("kind", "1p-frac")).make_params({**data.get("params", {}), **row.get("params", {})})
            _resolves("pretrain", [*experiment.flags(spec, row, "pretrain"), "--shards", "DATA", "--out", "OUT"])
        if "finetune" in spec:
            _resolves("finetune", [*experiment.flags(spec, row, "finetune"), *start, "--out", "OUT"])
        if spec["probe"]:
            for blocks in spec["probe"]["blocks"]:
                cfg = _resolves("probe", [*map(str, spec["probe"]["flags"]), *start, "--blocks", str(blocks)])
                assert cfg.model.blocks == blocks


def test_table9_rows_switch_off_their_augmentation_only():
    spec = experiment.load(str(REPO_ROOT / "benchmarks" / "table9_paper.yaml"))
    off = {row["name"]: _resolves("pretrain", [*experiment.flags(spec, row, "pretrain"), "--shards", "D"]).aug_off
           for row in spec["rows"]}
    assert off == {"all": (), "no crop": ("crop",), "no Mixup, CutMix": ("mixup", "cutmix"),
                   "no RandAugment": ("randaugment",), "no colour jitter": ("color-jitter",)}


def test_table7_small_rows_train_as_many_steps_as_the_released_recipe_at_1000():
    """Every L trains 240,000 steps with a 15-step warm-up: the released
    recipe's count at L = 1,000 (80,000 drop-last epochs of 3 steps)."""
    from fractrain.schedule import make_schedule

    spec = experiment.load(str(REPO_ROOT / "benchmarks" / "table7_paper.yaml"))
    for row in spec["rows"]:
        cfg = _resolves("pretrain", [*experiment.flags(spec, row, "pretrain"), "--shards", "D"])
        classes = row["params"]["num_classes"]
        schedule = make_schedule(cfg, classes, 1, 0)
        assert cfg.total_steps(schedule) == 240_000, row["name"]
        assert cfg.optim.warmup_epochs * schedule.steps_per_epoch == pytest.approx(15), row["name"]
        assert cfg.run.ckpt_every * schedule.steps_per_epoch == pytest.approx(3000), row["name"]


# The GPU short forms (the CPU miniatures, table5_cpu_*, are not).
SHORT_FILES = sorted(p for p in (REPO_ROOT / "benchmarks").glob("*_short.yaml") if "_cpu_" not in p.name)


def test_every_paper_table_has_a_short_form():
    assert {p.name.replace("_short", "_paper") for p in SHORT_FILES} >= {
        "table5_paper.yaml", "table6_paper.yaml", "table7_paper.yaml", "table9_paper.yaml", "fig3_paper.yaml"}


@pytest.mark.parametrize("path", SHORT_FILES, ids=[p.name for p in SHORT_FILES])
def test_short_forms_pretrain_every_row_1800_steps_of_short(path):
    """One GPU in about ten minutes: each row 1,800 steps (600 drop-last
    epochs at L = 1,000) with the `short` recipe and a 15-step warm-up, and
    the rows are a subset of the paper-budget file's."""
    from fractrain.schedule import make_schedule

    spec = experiment.load(str(path))
    paper = experiment.load(str(path).replace("_short", "_paper"))
    assert {r["name"] for r in spec["rows"]} <= {r["name"] for r in paper["rows"]}
    for row in spec["rows"]:
        if row.get("scratch"):
            continue
        cfg = _resolves("pretrain", [*experiment.flags(spec, row, "pretrain"), "--shards", "D"])
        classes = {**spec["data"]["params"], **row.get("params", {})}["num_classes"]
        schedule = make_schedule(cfg, classes, 1, 0)
        assert cfg.recipe_name == "short", row["name"]
        assert cfg.total_steps(schedule) == 1800, row["name"]
        assert cfg.optim.warmup_epochs * schedule.steps_per_epoch == pytest.approx(15), row["name"]


def test_row_folders_spell_out_the_greek():
    assert [experiment.slug(n) for n in ("Δ 0.1", "σ 6.0", "no Mixup, CutMix", "L 16")] == [
        "delta_0.1", "sigma_6.0", "no_Mixup_CutMix", "L_16"]


def test_a_bad_flag_in_an_experiment_file_is_caught():
    import click

    with pytest.raises(click.UsageError):
        _resolves("pretrain", ["--recipe", "paper", "--no-such-flag", "--shards", "DATA"])
