"""``fractrain experiment FILE.yaml``: a grid of rows run end to end on one
device or, under torchrun, on all of its ranks: build each row's data set
with fracbuild (reused when its manifest matches), pre-train, then fine-tune
and/or linear-probe once per seed (rows with ``scratch: true`` start from
random weights of the same architecture), then write ``report.md`` (mean and
per-seed best top-1, the paper's figure beside ours; the probe's top-1 per
row and number of blocks) and the plots (plots.py: ``loss.png``,
``top1.png``, ``probe.png``).

Every run goes through the ordinary commands with ``--resume auto``, so a
rerun skips finished runs and resumes a killed one. The file::

    name: table5-cpu
    data: {kind: 1p-frac, seed: 0, params: {num_classes: 32, size: 64}}   # shared by every row
    pretrain: [--recipe, paper, --model, vit_tiny, --steps, "200"]        # fractrain flags
    finetune: [--train, digits/train, --val, digits/val, --epochs, "5"]  # fractrain finetune flags
    probe: {flags: [--train, digits/train, --val, digits/val], blocks: [1, 2, 3, 4]}   # optional
    seeds: [0, 1, 2]
    rows:
      - {name: "Δ 0.1", params: {delta: 0.1}, paper: 84.2}
      - {name: "Δ 0.1, no Mixup", params: {delta: 0.1}, pretrain: [--aug-off, mixup]}  # flags added to the file's
      - {name: scratch, scratch: true, paper: 64.2}

``finetune`` may be left out when ``probe`` is given (Fig. 3). A row's
``pretrain`` / ``finetune`` flags follow the file's (the last of a flag
given twice wins; --aug-off adds up). Rows with equal data parameters share
one data set.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
from typing import Any, Callable

from fracbuild.atomic import atomic_file

from .config import load_yaml
from .errors import UserError

TOP_KEYS = {"name", "data", "pretrain", "finetune", "probe", "seeds", "rows"}
PROBE_KEYS = {"flags", "blocks"}
ROW_KEYS = {"name", "params", "scratch", "paper", "pretrain", "finetune"}


def load(path: str) -> dict[str, Any]:
    """The experiment file, checked; UserError on any problem."""
    spec = load_yaml(path, what="")
    if not spec:
        raise UserError(f"{path} must hold a mapping")
    unknown = sorted(set(spec) - TOP_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(TOP_KEYS))})")
    rows = spec.get("rows")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and r.get("name") for r in rows):
        raise UserError(f"{path}: rows must be a list of mappings, each with a name")
    _check_rows(path, rows)
    if any(not r.get("scratch") for r in rows) and not isinstance(spec.get("data"), dict):
        raise UserError(f"{path}: data (fracbuild kind, seed, params) is required for pre-trained rows")
    for key in ("pretrain", "finetune"):
        if not isinstance(spec.get(key, []), list):
            raise UserError(f"{path}: {key} must be a list of fractrain flags")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{path}: seeds must be a list of integers")
    if "finetune" not in spec and "probe" not in spec:
        raise UserError(f"{path}: give finetune (fractrain finetune flags), probe ({{flags, blocks}}) or both")
    probe = spec.get("probe")
    if probe is not None:
        probe = _probe_spec(path, probe)
    return {**spec, "probe": probe, "seeds": seeds,
            "name": spec.get("name") or os.path.splitext(os.path.basename(path))[0]}


def _check_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """Each row's keys and values; names and folder names unique."""
    for row in rows:
        where = f"{path}: row {row['name']!r}"
        extra = sorted(set(row) - ROW_KEYS)
        if extra:
            raise UserError(f"{where}: unknown key(s) {', '.join(extra)} (known: {', '.join(sorted(ROW_KEYS))})")
        for key in ("pretrain", "finetune"):
            if not isinstance(row.get(key, []), list):
                raise UserError(f"{where}: {key} must be a list of fractrain flags")
        if row.get("scratch") and row.get("pretrain"):
            raise UserError(f"{where} is a scratch row: it is not pre-trained, so it takes no pretrain flags")
        paper = row.get("paper")
        if paper is not None and (isinstance(paper, bool) or not isinstance(paper, (int, float))):
            raise UserError(f"{where}: paper must be the paper's top-1 (%), a number")
    if len({r["name"] for r in rows}) != len(rows):
        raise UserError(f"{path}: two rows share a name")
    folders: dict[str, str] = {}
    for row in rows:
        other = folders.setdefault(slug(row["name"]), row["name"])
        if other != row["name"]:
            raise UserError(f"{path}: rows {other!r} and {row['name']!r} would share the run folder "
                            f"{slug(row['name'])!r}; rename one")


def _probe_spec(path: str, probe: Any) -> dict[str, Any]:
    """``probe: {flags: [...], blocks: [1, 2, ...]}`` checked."""
    if not isinstance(probe, dict):
        raise UserError(f"{path}: probe must be a mapping: {{flags: [fractrain probe flags], blocks: [K, ...]}}")
    unknown = sorted(set(probe) - PROBE_KEYS)
    if unknown:
        raise UserError(f"{path}: probe: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(PROBE_KEYS))})")
    if not isinstance(probe.get("flags", []), list):
        raise UserError(f"{path}: probe: flags must be a list of fractrain probe flags")
    blocks = probe.get("blocks")
    if (not isinstance(blocks, list) or not blocks or len(set(blocks)) != len(blocks)
            or not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in blocks)):
        raise UserError(f"{path}: probe: blocks must be a list of distinct integers >= 1 (transformer blocks kept)")
    return {"flags": probe.get("flags", []), "blocks": blocks}


def slug(name: str) -> str:
    """The row's folder name: ASCII, the Greek of "Δ 0.1" / "σ 3.5" spelt out."""
    name = name.replace("Δ", "delta").replace("σ", "sigma")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "row"


def build_data(data: dict[str, Any], params: dict[str, Any], out: str, log: Callable[[str], None]) -> None:
    """fracbuild the row's data set into ``out`` unless a finished one with
    the same kind, seed and parameters is there."""
    from fracbuild.build import BuildSpec, run_build
    from fracbuild.generators import get_kind

    kind, seed = data.get("kind", "1p-frac"), int(data.get("seed", 0))
    merged = {**(data.get("params") or {}), **params}
    wanted = dataclasses.asdict(get_kind(kind).make_params(merged))
    manifest_path = os.path.join(out, "manifest.json")
    if os.path.exists(manifest_path):
        with open(manifest_path, encoding="utf-8") as handle:
            manifest = json.load(handle)
        have = manifest.get("params") or {}
        if (manifest.get("kind") == kind and manifest.get("seed") == seed
                and all(have.get(k) == v for k, v in wanted.items() if k in have)):
            log(f"{out}: reused (its manifest matches)")
            return
        log(f"{out}: its manifest differs from the experiment; rebuilding")
    spec = BuildSpec(kind=kind, seed=seed, params=merged, prefix=data.get("prefix", "data"))
    run_build(spec, out, workers=int(data.get("workers", 1)), overwrite=os.path.exists(manifest_path),
              resume=os.path.isdir(out) and not os.path.exists(manifest_path), progress=False, log=log)


def run(path: str, work: str | None, main: Callable[[list[str]], int], log: Callable[[str], None]) -> str:
    """Run the experiment; returns the report's path. ``main`` runs one
    fractrain command line (cli.main) and returns its exit code.

    Under torchrun every rank runs this, inside one process group that all
    the runs share: rank 0 builds the data sets and writes the report and
    plots, the others wait for it, and all ranks wait after each run so that
    its final.pt and summary.json are there for the next step."""
    from .distributed import shared_barrier, shared_group

    spec = load(path)
    work = work or os.path.join("runs", f"experiment-{slug(spec['name'])}")
    with shared_group() as rank:
        if rank != 0:
            log = _quiet
        os.makedirs(work, exist_ok=True)
        pre_rows = [r for r in spec["rows"] if not r.get("scratch")]
        checkpoints = pretrain_rows(spec, pre_rows, work, main, log, rank)
        finetuned: dict[str, list[float]] | None = None
        probed: dict[str, dict[int, list[float]]] | None = None
        if "finetune" in spec:
            finetuned = {row["name"]: [downstream(spec, row, checkpoints, "finetune", seed, work, main, log)
                                       for seed in spec["seeds"]] for row in spec["rows"]}
        if spec["probe"]:
            probed = {row["name"]: {k: [downstream(spec, row, checkpoints, "probe", seed, work, main, log, blocks=k)
                                        for seed in spec["seeds"]] for k in spec["probe"]["blocks"]}
                      for row in spec["rows"]}
        report = os.path.join(work, "report.md")
        if rank == 0:
            with atomic_file(report) as handle:
                handle.write(render_report(spec, finetuned, probed).encode("utf-8"))
            write_plots(spec, work, finetuned, probed)
        shared_barrier()
    return report


def _quiet(message: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for all."""


def downstream(spec: dict[str, Any], row: dict[str, Any], checkpoints: dict[str, str], command: str, seed: int,
               work: str, main: Callable[[list[str]], int], log: Callable[[str], None],
               blocks: int | None = None) -> float:
    """Fine-tune or probe ``row`` once (resumed or skipped when its folder
    holds a run); returns its best top-1 in [0, 1] (NaN when none was
    recorded). A scratch row starts from random weights of a pre-trained
    row's architecture (or of --model in the flags when no row is pre-trained)."""
    init = checkpoints.get(row["name"]) or next(iter(checkpoints.values()), None)
    start = (["--init", init] if init else []) + (["--scratch"] if row.get("scratch") else [])
    if command == "probe":
        argv = ["probe", *map(str, spec["probe"]["flags"]), *start, "--blocks", str(blocks)]
        out = os.path.join(work, "probe", f"{slug(row['name'])}-k{blocks}-s{seed}")
        what = f"probing {row['name']} after {blocks} block(s)"
    else:
        argv = ["finetune", *flags(spec, row, "finetune"), *start]
        out = os.path.join(work, "finetune", f"{slug(row['name'])}-s{seed}")
        what = f"fine-tuning {row['name']}"
    log(f"experiment: {what}, seed {seed} -> {out}")
    _call(main, [*argv, "--seed", str(seed), "--out", out, "--resume", "auto"])
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
        best = json.load(handle).get("best_top1")
    return math.nan if best is None else float(best)


def flags(spec: dict[str, Any], row: dict[str, Any], command: str) -> list[str]:
    """The file's flags for ``command`` followed by the row's own (a later
    flag overrides an earlier one; a repeatable one, such as --aug-off, adds)."""
    return [*map(str, spec.get(command) or []), *map(str, row.get(command) or [])]


def pretrain_rows(spec: dict[str, Any], rows: list[dict[str, Any]], work: str, main: Callable[[list[str]], int],
                  log: Callable[[str], None], rank: int = 0) -> dict[str, str]:
    """Build each row's data set (on rank 0; under torchrun the others wait)
    and pre-train on it; returns row name -> final checkpoint.
    Rows whose data parameters are equal share one data set (the first such
    row's folder): Table 9's rows differ only in flags."""
    from .distributed import shared_barrier

    built: dict[str, str] = {}
    checkpoints: dict[str, str] = {}
    for row in rows:
        params = row.get("params") or {}
        key = json.dumps({**(spec["data"].get("params") or {}), **params}, sort_keys=True, default=str)
        data_dir = built.get(key)
        if data_dir is None:
            data_dir = built[key] = os.path.join(work, "data", slug(row["name"]))
            if rank == 0:
                build_data(spec["data"], params, data_dir, log)
            shared_barrier()
        out = os.path.join(work, "pretrain", slug(row["name"]))
        log(f"experiment: pre-training {row['name']} on {data_dir} -> {out}")
        _call(main, ["pretrain", *flags(spec, row, "pretrain"), "--shards", data_dir, "--out", out, "--resume", "auto"])
        checkpoints[row["name"]] = os.path.join(out, "final.pt")
    return checkpoints


def _call(main: Callable[[list[str]], int], argv: list[str]) -> None:
    """Run one fractrain command line; under torchrun all ranks then wait
    until rank 0 has written the run's final files."""
    from .distributed import shared_barrier

    code = main(argv)
    if code != 0:
        raise UserError(f"fractrain {' '.join(argv[:1])} stopped (exit code {code}); rerun the experiment to resume")
    shared_barrier()


def render_report(spec: dict[str, Any], finetuned: dict[str, list[float]] | None,
                  probed: dict[str, dict[int, list[float]]] | None) -> str:
    """report.md: the fine-tuning table (mean ± sd, per seed, the paper's
    figure) and the probe table (rows × blocks, mean ± sd over seeds)."""
    seeds = spec["seeds"]
    pngs = ((["loss.png (pre-training loss)"] if any(not row.get("scratch") for row in spec["rows"]) else [])
            + (["top1.png"] if finetuned is not None else []) + (["probe.png"] if probed is not None else []))
    lines = [f"# {spec['name']}", "", f"{len(seeds)} seed(s): {', '.join(map(str, seeds))}. Best top-1 (%) on the "
             f"validation set of each run; plots: {', '.join(pngs)}."]
    if finetuned is not None:
        lines += ["", "## Fine-tuning", "", "| row | ours, mean ± sd | per seed | paper |", "|---|---|---|---|"]
        for row in spec["rows"]:
            values = _percent(finetuned[row["name"]])
            paper = row.get("paper")
            lines.append(f"| {row['name']} | {_mean_sd(values)} | {' / '.join(f'{v:.1f}' for v in values)} | "
                         f"{paper if paper is not None else '—'} |")
    if probed is not None:
        blocks = spec["probe"]["blocks"]
        lines += ["", "## Linear probe", "", "Top-1 (%) of a linear classifier on the backbone cut after K "
                  "transformer blocks, mean ± sd over seeds.", "",
                  "| row | " + " | ".join(f"K = {k}" for k in blocks) + " |", "|---|" + "---|" * len(blocks)]
        for row in spec["rows"]:
            cells = [_mean_sd(_percent(probed[row["name"]][k])) for k in blocks]
            lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _percent(values: list[float]) -> list[float]:
    return [100 * v for v in values if not math.isnan(v)]


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def write_plots(spec: dict[str, Any], work: str, finetuned: dict[str, list[float]] | None,
                probed: dict[str, dict[int, list[float]]] | None) -> None:
    """loss.png, top1.png when the file fine-tunes, probe.png when it
    probes. Each row keeps its colour in every plot."""
    from . import plots

    colours = {row["name"]: plots.colour(i) for i, row in enumerate(spec["rows"])}
    curves = {row["name"]: _losses(os.path.join(work, "pretrain", slug(row["name"]), "metrics.jsonl"))
              for row in spec["rows"] if not row.get("scratch")}
    plots.line_plot(curves, os.path.join(work, "loss.png"), title="pre-training loss", x_label="step",
                    colours=colours)
    if finetuned is not None:
        plots.top1_plot([(row["name"], _percent(finetuned[row["name"]]), row.get("paper")) for row in spec["rows"]],
                        os.path.join(work, "top1.png"), title=f"{spec['name']}: fine-tuned top-1 (%)")
    if probed is not None:
        lines = {name: [(k, statistics.mean(v)) for k, values in by_k.items() if (v := _percent(values))]
                 for name, by_k in probed.items()}
        plots.line_plot(lines, os.path.join(work, "probe.png"), title="linear probe top-1 (%), mean over seeds",
                        x_label="transformer blocks kept (K)", colours=colours, markers=True)


def _losses(metrics: str) -> list[tuple[float, float]]:
    with open(metrics, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]
