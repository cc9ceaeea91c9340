"""The experiment files shipped in benchmarks/ load, every row's data set is
a valid fracbuild build, and their fractrain flags parse (nothing runs)."""

from __future__ import annotations

import pytest

from conftest import REPO_ROOT
from fracbuild.generators import get_kind
from fractrain import experiment
from fractrain.cli import cli

FILES = sorted((REPO_ROOT / "benchmarks").glob("table*.yaml"))


def _parses(command: str, argv: list[str]) -> None:
    """click parses ``argv`` for ``command`` (names, types, choices) or raises."""
    with cli.commands[command].make_context(command, argv, resilient_parsing=False):
        pass


def test_there_are_experiment_files():
    assert any(path.name == "table5_paper.yaml" for path in FILES), FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_experiment_file_loads_builds_and_parses(path):
    spec = experiment.load(str(path))
    data = spec["data"]
    for row in spec["rows"]:
        if not row.get("scratch"):
            get_kind(data.get("kind", "1p-frac")).make_params({**data.get("params", {}), **row.get("params", {})})
    _parses("pretrain", [*map(str, spec["pretrain"]), "--shards", "DATA", "--out", "OUT"])
    _parses("finetune", [*map(str, spec["finetune"]), "--init", "CKPT.pt", "--out", "OUT"])


def test_a_bad_flag_in_an_experiment_file_is_caught():
    import click

    with pytest.raises(click.UsageError):
        _parses("pretrain", ["--recipe", "paper", "--no-such-flag", "--shards", "DATA"])
