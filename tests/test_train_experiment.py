"""``fractrain experiment``: a tiny grid end to end (build, pre-train,
fine-tune per seed, scratch), the report, the plot, and a rerun that skips
what is finished."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from fractrain.cli import main

TINY = ["--model", "vit_tiny", "--input-size", "32", "--model-arg", "patch_size=8", "--model-arg", "depth=1",
        "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2", "--workers", "0", "--no-progress",
        "--device", "cpu"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tree(root: Path) -> Path:
    from PIL import Image

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((16, 16), 50 * i + 30 * (label == "b"), np.uint8)).save(root / label / f"{i}.png")
    return root


def experiment_file(tmp_path: Path) -> Path:
    images = tree(tmp_path / "images")
    spec = {
        "name": "tiny table 5",
        "data": {"kind": "1p-frac", "seed": 0, "params": {"num_classes": 16, "size": 64, "pad": 2,
                                                          "iterations": 5000}},
        "pretrain": ["--recipe", "exact-epochs", *TINY, "-b", "8", "--steps", "3", "--log-every", "1"],
        "finetune": ["--recipe", "exact-epochs-finetune", *TINY, "--train", str(images), "--val", str(images),
                     "-b", "4", "--steps", "2"],
        "seeds": [0, 1],
        "rows": [{"name": "Δ 0.1", "params": {"delta": 0.1}, "paper": 84.2},
                 {"name": "Δ 0.001", "params": {"delta": 0.001}, "paper": 1.2},
                 {"name": "scratch", "scratch": True, "paper": 64.2}],
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def test_experiment_runs_the_grid_writes_the_report_and_skips_finished_runs(tmp_path, capsys):
    path, work = experiment_file(tmp_path), tmp_path / "work"
    assert main(["experiment", str(path), "--work", str(work)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(work / "report.md")  # after each fine-tune's line
    report = (work / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| Δ") or line.startswith("| scratch")]
    assert [r.split("|")[1].strip() for r in rows] == ["Δ 0.1", "Δ 0.001", "scratch"]
    assert [r.split("|")[4].strip() for r in rows] == ["84.2", "1.2", "64.2"]
    assert all(len(r.split("|")[3].split("/")) == 2 for r in rows)  # one figure per seed
    assert (work / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(work / "top1.png").size == (640, 400) and not (work / "probe.png").exists()
    # Two data sets, one per Δ, built with the row's parameter.
    import json

    deltas = [json.loads((work / "data" / d / "manifest.json").read_text())["params"]["delta"]
              for d in ("delta_0.1", "delta_0.001")]
    assert deltas == [0.1, 0.001]
    scratch = json.loads((work / "finetune" / "scratch-s1" / "summary.json").read_text())
    assert scratch["scratch"] is True and scratch["init"] is None
    pre = json.loads((work / "finetune" / "delta_0.1-s0" / "summary.json").read_text())
    assert pre["init"] == str(work / "pretrain" / "delta_0.1" / "final.pt")

    # A rerun touches no finished run and reuses the data sets.
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("summary.json")}
    assert main(["experiment", str(path), "--work", str(work)]) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("summary.json")} == stamps
    err = capsys.readouterr().err
    assert err.count("reused (its manifest matches)") == 2 and "is finished; nothing to do" in err


def test_experiment_file_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    for text, expected in (("rows: []\n", "rows must be a list"), ("colour: red\nrows: [{name: a}]\n", "unknown key"),
                           ("rows: [{name: a, scratch: true}, {name: a, scratch: true}]\n", "two rows share a name"),
                           ("rows: [{name: a, scratch: true, colour: red}]\n", "row 'a': unknown key(s) colour"),
                           ("rows: [{name: a, scratch: true, finetune: --lr}]\n", "finetune must be a list"),
                           ("rows: [{name: a, scratch: true, pretrain: [--lr, '1']}]\n", "takes no pretrain flags"),
                           ("rows: [{name: a b, scratch: true}, {name: a_b, scratch: true}]\n",
                            "would share the run folder"),
                           ("rows: [{name: a, scratch: true}]\n", "give finetune"),
                           ("finetune: []\nrows: [{name: a, scratch: true, paper: high}]\n", "paper must be"),
                           ("probe: [1, 2]\nrows: [{name: a, scratch: true}]\n", "probe must be a mapping"),
                           ("probe: {blocks: [0]}\nrows: [{name: a, scratch: true}]\n", "blocks must be a list"),
                           ("probe: {blocks: [1], flag: []}\nrows: [{name: a, scratch: true}]\n", "probe: unknown")):
        bad.write_text(text)
        assert main(["experiment", str(bad), "--work", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert main(["experiment", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "w")


def test_row_flags_follow_the_files_and_rows_with_equal_data_share_one_build(tmp_path, capsys):
    """Table 9's shape: rows on the same data set that differ only in their
    own pre-training flags; a row's fine-tuning flags reach only its runs."""
    spec = yaml.safe_load(experiment_file(tmp_path).read_text())
    spec["seeds"] = [0]
    spec["rows"] = [{"name": "all", "params": {"delta": 0.1}},
                    {"name": "no mix", "params": {"delta": 0.1}, "pretrain": ["--aug-off", "mixup,cutmix"],
                     "finetune": ["--smoothing", "0.3"]}]
    spec["pretrain"] += ["--aug-off", "erasing"]
    path, work = tmp_path / "rows.yaml", tmp_path / "work"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    assert main(["experiment", str(path), "--work", str(work)]) == 0
    assert sorted(p.name for p in (work / "data").iterdir()) == ["all"]  # one build for both rows

    def config(folder: str) -> dict:
        return yaml.safe_load((work / folder / "config.yaml").read_text())

    assert config("pretrain/all")["aug_off"] == ["erasing"]
    assert config("pretrain/no_mix")["aug_off"] == ["erasing", "mixup", "cutmix"]
    assert config("pretrain/no_mix")["data"]["shards"] == str(work / "data" / "all")
    assert config("finetune/no_mix-s0")["augment"]["label_smoothing"] == 0.3
    assert config("finetune/all-s0")["augment"]["label_smoothing"] != 0.3


def test_probe_only_experiment_probes_each_row_per_block_and_seed(tmp_path, capsys):
    """Fig. 3's shape: no fine-tuning; every row (scratch too: random weights)
    probed after K = 1 and 2 blocks per seed; the probe table and probe.png."""
    import json

    spec = yaml.safe_load(experiment_file(tmp_path).read_text())
    images = spec["finetune"][spec["finetune"].index("--train") + 1]
    del spec["finetune"]
    spec["pretrain"] += ["--model-arg", "depth=2"]
    run_flags = ["--input-size", "32", "--workers", "0", "--no-progress", "--device", "cpu"]  # the checkpoint's model
    spec["probe"] = {"flags": [*run_flags, "--train", images, "--val", images, "-b", "4", "--steps", "2"], "blocks": [1, 2]}
    spec["rows"] = [{"name": "Δ 0.1", "params": {"delta": 0.1}}, {"name": "scratch", "scratch": True}]
    path, work = tmp_path / "fig3.yaml", tmp_path / "work"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    assert main(["experiment", str(path), "--work", str(work)]) == 0
    assert not (work / "finetune").exists()
    runs = sorted(p.name for p in (work / "probe").iterdir())
    assert runs == [f"{row}-k{k}-s{s}" for row in ("delta_0.1", "scratch") for k in (1, 2) for s in (0, 1)]
    for run in runs:
        summary = json.loads((work / "probe" / run / "summary.json").read_text())
        config = yaml.safe_load((work / "probe" / run / "config.yaml").read_text())
        assert config["model"]["blocks"] == int(run.split("-k")[1][0]) and config["run"]["seed"] == int(run[-1])
        assert summary["scratch"] is run.startswith("scratch")
        assert summary["init"] == (None if run.startswith("scratch") else str(work / "pretrain" / "delta_0.1" / "final.pt"))
    report = (work / "report.md").read_text()
    assert "## Fine-tuning" not in report and "| row | K = 1 | K = 2 |" in report
    probe_rows = [line.split("|")[1:-1] for line in report.splitlines()[report.splitlines().index("| row | K = 1 | K = 2 |"):]
                  if line.startswith("| Δ") or line.startswith("| scratch")]
    assert [cells[0].strip() for cells in probe_rows] == ["Δ 0.1", "scratch"]
    # each cell is mean ± sd of the two seeds' summaries
    for cells, row in zip(probe_rows, ("delta_0.1", "scratch")):
        for k, cell in zip((1, 2), cells[1:]):
            values = [100 * json.loads((work / "probe" / f"{row}-k{k}-s{s}" / "summary.json").read_text())["best_top1"]
                      for s in (0, 1)]
            assert cell.strip().split(" ± ")[0] == f"{sum(values) / 2:.1f}"
    from PIL import Image

    assert Image.open(work / "probe.png").size == (640, 400) and (work / "loss.png").exists()
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob("summary.json")}
    capsys.readouterr()
    assert main(["experiment", str(path), "--work", str(work)]) == 0
    assert {p: p.stat().st_mtime_ns for p in work.rglob("summary.json")} == stamps
