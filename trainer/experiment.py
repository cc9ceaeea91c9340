"""``fractrain experiment FILE.yaml``: a grid of rows run end to end on one
device: build each row's data set with fracbuild (reused when its manifest
matches), pre-train, fine-tune once per seed (rows with ``scratch: true``
fine-tune random weights of the same architecture), then write
``report.md`` (mean and per-seed best top-1, the paper's figure beside
ours) and ``loss.png`` (pre-training loss per row).

Every run goes through the ordinary commands with ``--resume auto``, so a
rerun skips finished runs and resumes a killed one. The file::

    name: table5-cpu
    data: {kind: 1p-frac, seed: 0, params: {num_classes: 32, size: 64}}   # shared by every row
    pretrain: [--recipe, paper, --model, vit_tiny, --steps, "200"]        # fractrain flags
    finetune: [--train, digits/train, --val, digits/val, --epochs, "5"]  # fractrain finetune flags
    seeds: [0, 1, 2]
    rows:
      - {name: "Δ 0.1", params: {delta: 0.1}, paper: 84.2}
      - {name: "Δ 0.1, no Mixup", params: {delta: 0.1}, pretrain: [--aug-off, mixup]}  # flags added to the file's
      - {name: scratch, scratch: true, paper: 64.2}

A row's ``pretrain`` / ``finetune`` flags follow the file's (the last of a
flag given twice wins; --aug-off adds up). Rows with equal data parameters
share one data set.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
from typing import Any, Callable


from .config import load_yaml
from .errors import UserError

TOP_KEYS = {"name", "data", "pretrain", "finetune", "seeds", "rows"}
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
    for row in rows:
        extra = sorted(set(row) - ROW_KEYS)
        if extra:
            raise UserError(f"{path}: row {row['name']!r}: unknown key(s) {', '.join(extra)} "
                            f"(known: {', '.join(sorted(ROW_KEYS))})")
        for key in ("pretrain", "finetune"):
            if not isinstance(row.get(key, []), list):
                raise UserError(f"{path}: row {row['name']!r}: {key} must be a list of fractrain flags")
        if row.get("scratch") and row.get("pretrain"):
            raise UserError(f"{path}: row {row['name']!r} is a scratch row: it is not pre-trained, so it takes "
                            "no pretrain flags")
    if len({r["name"] for r in rows}) != len(rows):
        raise UserError(f"{path}: two rows share a name")
    folders: dict[str, str] = {}
    for row in rows:
        other = folders.setdefault(slug(row["name"]), row["name"])
        if other != row["name"]:
            raise UserError(f"{path}: rows {other!r} and {row['name']!r} would share the run folder "
                            f"{slug(row['name'])!r}; rename one")
    if any(not r.get("scratch") for r in rows) and not isinstance(spec.get("data"), dict):
        raise UserError(f"{path}: data (fracbuild kind, seed, params) is required for pre-trained rows")
    for key in ("pretrain", "finetune"):
        if not isinstance(spec.get(key, []), list):
            raise UserError(f"{path}: {key} must be a list of fractrain flags")
    seeds = spec.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"{path}: seeds must be a list of integers")
    return {**spec, "seeds": seeds, "name": spec.get("name") or os.path.splitext(os.path.basename(path))[0]}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("Δ", "delta")).strip("_") or "row"


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
    fractrain command line (cli.main) and returns its exit code."""
    spec = load(path)
    work = work or os.path.join("runs", f"experiment-{slug(spec['name'])}")
    os.makedirs(work, exist_ok=True)
    pre_rows = [r for r in spec["rows"] if not r.get("scratch")]
    checkpoints = pretrain_rows(spec, pre_rows, work, main, log)
    results: dict[str, list[float | None]] = {}
    for row in spec["rows"]:
        init = checkpoints.get(row["name"]) or next(iter(checkpoints.values()), None)
        results[row["name"]] = []
        for seed in spec["seeds"]:
            out = os.path.join(work, "finetune", f"{slug(row['name'])}-s{seed}")
            start = (["--init", init] if init else []) + (["--scratch"] if row.get("scratch") else [])
            log(f"experiment: fine-tuning {row['name']}, seed {seed} -> {out}")
            _call(main, ["finetune", *flags(spec, row, "finetune"), *start, "--seed", str(seed),
                         "--out", out, "--resume", "auto"])
            with open(os.path.join(out, "summary.json"), encoding="utf-8") as handle:
                results[row["name"]].append(json.load(handle).get("best_top1"))
    report = os.path.join(work, "report.md")
    with open(report + ".tmp", "w", encoding="utf-8") as handle:
        handle.write(render_report(spec, results))
    os.replace(report + ".tmp", report)
    curves = {r["name"]: _losses(os.path.join(work, "pretrain", slug(r["name"]), "metrics.jsonl")) for r in pre_rows}
    if curves:
        plot_losses(curves, os.path.join(work, "loss.png"))
    return report


def flags(spec: dict[str, Any], row: dict[str, Any], command: str) -> list[str]:
    """The file's flags for ``command`` followed by the row's own (a later
    flag overrides an earlier one; a repeatable one, such as --aug-off, adds)."""
    return [*map(str, spec.get(command) or []), *map(str, row.get(command) or [])]


def pretrain_rows(spec: dict[str, Any], rows: list[dict[str, Any]], work: str, main: Callable[[list[str]], int],
                  log: Callable[[str], None]) -> dict[str, str]:
    """Build each row's data set and pre-train on it; returns row name ->
    final checkpoint. Rows whose data parameters are equal share one data
    set (the first such row's folder): Table 9's rows differ only in flags."""
    built: dict[str, str] = {}
    checkpoints: dict[str, str] = {}
    for row in rows:
        params = row.get("params") or {}
        key = json.dumps({**(spec["data"].get("params") or {}), **params}, sort_keys=True, default=str)
        data_dir = built.get(key)
        if data_dir is None:
            data_dir = built[key] = os.path.join(work, "data", slug(row["name"]))
            build_data(spec["data"], params, data_dir, log)
        out = os.path.join(work, "pretrain", slug(row["name"]))
        log(f"experiment: pre-training {row['name']} on {data_dir} -> {out}")
        _call(main, ["pretrain", *flags(spec, row, "pretrain"), "--shards", data_dir, "--out", out, "--resume", "auto"])
        checkpoints[row["name"]] = os.path.join(out, "final.pt")
    return checkpoints


def _call(main: Callable[[list[str]], int], argv: list[str]) -> None:
    code = main(argv)
    if code != 0:
        raise UserError(f"fractrain {' '.join(argv[:1])} stopped (exit code {code}); rerun the experiment to resume")


def render_report(spec: dict[str, Any], results: dict[str, list[float | None]]) -> str:
    seeds = spec["seeds"]
    lines = [f"# {spec['name']}", "", f"Fine-tuned best top-1 (%), {len(seeds)} seed(s): {', '.join(map(str, seeds))}.",
             "", "| row | ours, mean ± sd | per seed | paper |", "|---|---|---|---|"]
    for row in spec["rows"]:
        values = [100 * v for v in results[row["name"]] if v is not None]
        mean = statistics.mean(values) if values else math.nan
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        paper = row.get("paper")
        lines.append(f"| {row['name']} | {mean:.1f} ± {sd:.1f} | {' / '.join(f'{v:.1f}' for v in values)} | "
                     f"{paper if paper is not None else '—'} |")
    return "\n".join(lines) + "\n"


def _losses(metrics: str) -> list[tuple[int, float]]:
    with open(metrics, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot_losses(curves: dict[str, list[tuple[int, float]]], out: str, size: tuple[int, int] = (640, 400)) -> None:
    """Loss against step, one line per row, as a PNG drawn with Pillow."""
    from PIL import Image, ImageDraw

    width, height = size
    left, right, top, bottom = 60, 150, 20, 40
    points = [p for curve in curves.values() for p in curve]
    if not points:
        return
    max_step = max(s for s, _ in points) or 1
    low, high = min(v for _, v in points), max(v for _, v in points)
    high = high if high > low else low + 1.0
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([left, top, width - right, height - bottom], outline="black")

    def xy(step: float, value: float) -> tuple[float, float]:
        return (left + (width - right - left) * step / max_step,
                height - bottom - (height - bottom - top) * (value - low) / (high - low))

    for index, (name, curve) in enumerate(curves.items()):
        colour = PALETTE[index % len(PALETTE)]
        if len(curve) > 1:
            draw.line([xy(s, v) for s, v in curve], fill=colour, width=2)
        # Pillow's built-in font is Latin-1: spell out the Greek of "Δ 0.1".
        draw.text((width - right + 8, top + 16 * index), name.replace("Δ", "delta"), fill=colour)
    draw.text((left, height - bottom + 8), f"step 0 .. {max_step}", fill="black")
    draw.text((4, top), f"{high:.2f}", fill="black")
    draw.text((4, height - bottom - 10), f"{low:.2f}", fill="black")
    draw.text((left, 4), "pre-training loss", fill="black")
    image.save(out)
