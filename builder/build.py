"""A build from start to commit: check the output, prepare the system,
render the missing shards, write ``_info.json`` and the manifest last."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from tqdm import tqdm

from . import manifest as mf
from . import outlock, pool, shards
from .atomic import PARTIAL_SUFFIX
from .errors import BuildFailure, UserError
from .generators import get_kind
from .location import is_remote

PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class BuildSpec:
    """Everything that decides a data set's bytes (workers do not)."""

    kind: str
    seed: int
    params: dict[str, Any]
    prefix: str
    shard_size: int = shards.DEFAULT_SHARD_SIZE

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "params": self.params,
                "prefix": self.prefix, "shard_size": self.shard_size}


def resolve(spec: BuildSpec) -> tuple[type, Any]:
    """Validate the spec; returns (generator class, params object)."""
    generator_cls = get_kind(spec.kind)
    params = generator_cls.make_params(spec.params)
    if spec.shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {spec.shard_size}")
    if not PREFIX_RE.match(spec.prefix):
        raise UserError(f"--name {spec.prefix!r} may hold only letters, digits, '-' and '_' (no dots)")
    if not 0 <= spec.seed < 2**63:
        raise UserError(f"--seed must lie in [0, 2^63), got {spec.seed}")
    return generator_cls, params


def spec_from_manifest(manifest: dict[str, Any]) -> BuildSpec:
    return BuildSpec(kind=manifest["kind"], seed=manifest["seed"], params=manifest["params"],
                     prefix=manifest["layout"]["prefix"], shard_size=manifest["layout"]["shard_size"])


# --- the output directory ---------------------------------------------------
def is_build_file(name: str, prefix: str) -> bool:
    """Whether ``name`` (a file in --out, or a key under an s3:// prefix) is
    one a build of this prefix writes: its shards, manifest, state, lock."""
    base = name[: -len(PARTIAL_SUFFIX)] if name.endswith(PARTIAL_SUFFIX) else name
    return (base in (mf.MANIFEST_NAME, mf.TIMM_INFO_NAME, mf.BUILD_STATE_NAME, outlock.LOCK_NAME)
            or bool(shards.shard_pattern(prefix).match(base)))


def check_output(out_dir: str, spec: BuildSpec, resume: bool, overwrite: bool) -> dict[str, Any] | None:
    """Decide what to do with ``out_dir`` before anything is written.

    Returns the unfinished build's state when resuming one, else None.
    Raises UserError when the directory cannot be used as asked.
    """
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} exists and is not a directory")
    entries = [e for e in (os.listdir(out_dir) if os.path.isdir(out_dir) else []) if e != outlock.LOCK_NAME]

    def read_state() -> dict[str, Any]:
        path = os.path.join(out_dir, mf.BUILD_STATE_NAME)
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read the unfinished build's state {path}: {error}") from None

    return existing_build(entries, spec, out_dir, resume=resume, overwrite=overwrite, read_state=read_state,
                          read_manifest=lambda: mf.read_manifest(os.path.join(out_dir, mf.MANIFEST_NAME)),
                          things="files")


def existing_build(names: list[str], spec: BuildSpec, where: str, *, resume: bool, overwrite: bool,
                   read_state: Callable[[], dict[str, Any]], read_manifest: Callable[[], dict[str, Any]],
                   things: str) -> dict[str, Any] | None:
    """What an output already holding ``names`` (a folder's files, or the
    keys under an s3:// prefix, ``things``) means for this build: None to
    build from scratch, the unfinished build's state to resume it,
    ``{"complete": True}`` for a finished one. UserError when it cannot be
    used as asked (foreign files, no --resume, another data set's build)."""
    if not names:
        return None
    if overwrite:
        foreign = sorted(name for name in names if not is_build_file(name, spec.prefix))
        if foreign:
            raise UserError(f"--overwrite: {where} holds {things} fracbuild did not write "
                            f"({', '.join(foreign[:3])}); remove them or choose another --out")
        return None
    if not resume:
        raise UserError(f"{where} is not empty; pass --resume to finish an interrupted build "
                        "or --overwrite to replace it")
    if mf.BUILD_STATE_NAME in names:
        state = read_state()
        require_same_spec(state.get("spec", {}), spec.identity(), where)
        return state
    if mf.MANIFEST_NAME in names:
        require_same_spec(spec_from_manifest(read_manifest()).identity(), spec.identity(), where)
        return {"complete": True}
    raise UserError(f"--resume: {where} holds no unfinished fracbuild build")


def require_same_spec(recorded: dict, requested: dict, out_dir: str) -> None:
    """UserError unless the build recorded at ``out_dir`` asked for what
    this one asks (``--resume`` must not mix two data sets)."""
    for key in requested:
        if recorded.get(key) != requested[key]:
            if key == "params":
                diff = sorted(k for k in requested[key] if recorded.get(key, {}).get(k) != requested[key][k])
                key = "option(s) " + ", ".join(diff)
            raise UserError(f"--resume: {key} differs from the build in {out_dir}; "
                            "use the same options, or --overwrite")


def _clear(out_dir: str, prefix: str) -> None:
    for entry in os.listdir(out_dir):
        if is_build_file(entry, prefix) and entry != outlock.LOCK_NAME:
            os.remove(os.path.join(out_dir, entry))


def _remove_partials(out_dir: str) -> None:
    for entry in os.listdir(out_dir):
        if entry.endswith(PARTIAL_SUFFIX):
            os.remove(os.path.join(out_dir, entry))


def shard_records(read: Iterable[shards.ReadSample], plan: shards.ShardPlan, width: int,
                  per_class: int) -> list[dict[str, Any]]:
    """The sample records of a shard read back, if it holds exactly the
    samples ``plan`` says (keys, indices and labels, in order); ValueError
    otherwise. The resume check of a local and of a remote output."""
    read = list(read)
    records = [s.record for s in read]
    expected = [shards.sample_key(i, width) for i in range(plan.first, plan.first + plan.count)]
    if ([s.key for s in read] != expected or [shards.sample_key(r["index"], width) for r in records] != expected
            or any(r["label"] != s.label or s.label != r["index"] // per_class for r, s in zip(records, read))):
        raise ValueError("unexpected samples")
    return records


def _existing_shard(out_dir: str, plan: shards.ShardPlan, prefix: str, width: int,
                    per_class: int) -> pool.ShardResult | None:
    """A complete shard left by an interrupted build, read back and checked;
    None (and the file removed) if it is not exactly what the plan says."""
    file = shards.shard_name(prefix, plan.index)
    path = os.path.join(out_dir, file)
    if not os.path.exists(path):
        return None
    try:
        records = shard_records(shards.read_shard(path), plan, width, per_class)
    except (ValueError, KeyError, OSError):
        os.remove(path)
        return None
    return pool.ShardResult(plan, file, os.path.getsize(path), shards.sha256_file(path), records)


class LocalOutput:
    """``--out`` as a local folder (a shared file system under ``--ray``):
    shards under ``.partial`` then renamed, the state file while unfinished,
    ``_info.json`` and the manifest written last."""

    def __init__(self, out_dir: str):
        self.where = out_dir

    def check(self, spec: BuildSpec, resume: bool, overwrite: bool) -> dict[str, Any] | None:
        return check_output(self.where, spec, resume, overwrite)

    def read_manifest(self) -> dict[str, Any]:
        return mf.read_manifest(self.where)

    def begin(self, spec: BuildSpec, system: dict, search_seconds: float, overwrite: bool,
              state: dict[str, Any] | None) -> None:
        os.makedirs(self.where, exist_ok=True)
        if overwrite:
            _clear(self.where, spec.prefix)
        _remove_partials(self.where)
        _write_json(os.path.join(self.where, mf.BUILD_STATE_NAME),
                    {"spec": spec.identity(), "system": system, "search_seconds": search_seconds}, resumable=False)

    def finished(self, plans: list[shards.ShardPlan], prefix: str, width: int,
                 per_class: int) -> list[pool.ShardResult]:
        found = (_existing_shard(self.where, plan, prefix, width, per_class) for plan in plans)
        return [result for result in found if result]

    def worker_spec(self, spec: BuildSpec, params: Any, system: dict, width: int,
                    todo: list[shards.ShardPlan]) -> pool.WorkerSpec:
        return pool.WorkerSpec(spec.kind, params, spec.seed, system, self.where, spec.prefix, width)

    def shard_path(self, result: pool.ShardResult) -> str:
        return os.path.join(self.where, result.file)

    def cleanup(self) -> None:
        _remove_partials(self.where)

    def commit(self, info: dict[str, Any], manifest: dict[str, Any], results: list[pool.ShardResult]) -> None:
        _write_json(os.path.join(self.where, mf.TIMM_INFO_NAME), info)
        _write_json(os.path.join(self.where, mf.MANIFEST_NAME), manifest)  # the commit marker
        os.remove(os.path.join(self.where, mf.BUILD_STATE_NAME))


# --- the build --------------------------------------------------------------
def run_build(spec: BuildSpec, out_dir: str, *, workers: int = 1, resume: bool = False,
              overwrite: bool = False, system: dict | None = None, progress: bool = True,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              on_shard: Callable[[str, pool.ShardResult], None] | None = None,
              distributed: Any = None, endpoint_url: str | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Build (or finish) the data set ``spec`` in ``out_dir``; returns the manifest.

    ``out_dir`` is a local folder, or an ``s3://bucket/prefix`` that every
    worker writes its shards to directly (``endpoint_url`` and ``timeout``
    as for :class:`fracbuild.location.Location`; see
    :mod:`fracbuild.remote_out`). ``system`` skips the search (a rebuild
    from a manifest). ``on_shard`` is called with (path, result) as each
    shard of a local ``out_dir`` is complete (e.g. to upload it).
    ``distributed`` (a :class:`fracbuild.ray_exec.RayExecutor`) runs the
    search and the shards as Ray tasks instead of this machine's processes;
    the plan, the checks and the manifest stay here, so the bytes are the same.
    """
    generator_cls, params = resolve(spec)
    # Compare and record the full parameter set, JSON-normalised (tuples -> lists).
    spec = dataclasses.replace(spec, params=json.loads(json.dumps(dataclasses.asdict(params))))
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    options = {"workers": workers, "resume": resume, "overwrite": overwrite, "system": system, "progress": progress,
               "log": log, "on_shard": on_shard, "distributed": distributed}
    if is_remote(os.fspath(out_dir)):
        from .remote_out import RemoteOutput

        if on_shard is not None:
            raise UserError(f"--publish needs a local --out; --out {out_dir} already writes to object storage")
        output = RemoteOutput(out_dir, endpoint_url=endpoint_url, timeout=timeout, jobs=workers, log=log)
        return _build(spec, generator_cls, params, output, **options)
    # Held from before the search to the commit: a second build into out_dir
    # fails at once, and an unwritable out_dir fails before any work.
    with outlock.hold(out_dir):
        return _build(spec, generator_cls, params, LocalOutput(out_dir), **options)


def _build(spec: BuildSpec, generator_cls: type, params: Any, output: Any, *, workers: int, resume: bool,
           overwrite: bool, system: dict | None, progress: bool, log: Callable[[str], None],
           on_shard: Callable[[str, pool.ShardResult], None] | None, distributed: Any) -> dict[str, Any]:
    """The build into ``output`` (a :class:`LocalOutput` or a
    :class:`fracbuild.remote_out.RemoteOutput`)."""
    state = output.check(spec, resume, overwrite)
    if state and state.get("complete"):
        log(f"{output.where} is already complete; nothing to do")
        return output.read_manifest()

    search_seconds = 0.0
    if state:
        system = state["system"]
    elif system is None:
        started = time.perf_counter()
        if distributed is not None:
            system = distributed.prepare(generator_cls, params, spec.seed, log)
        else:
            system = generator_cls.prepare(params, spec.seed, log, workers=workers)
        search_seconds = time.perf_counter() - started

    # From here on we write. The state file lets --resume finish the build.
    output.begin(spec, system, search_seconds, overwrite, state)
    search_seconds = state.get("search_seconds", 0.0) if state else search_seconds

    generator = generator_cls(params, spec.seed, system)
    num_samples = generator.num_samples()
    width = shards.key_width(num_samples)
    plans = shards.plan_shards(num_samples, spec.shard_size)
    tally = SampleTally(num_samples // generator.num_classes())
    results: dict[int, pool.ShardResult] = {}
    for done in output.finished(plans, spec.prefix, width, tally.per_class) if state else ():
        results[done.plan.index] = tally.take(done)
    if results:
        log(f"resume: {len(results)} of {len(plans)} shards already complete")

    todo = [p for p in plans if p.index not in results]
    worker_spec = output.worker_spec(spec, params, system, width, todo)
    started = time.perf_counter()
    bar = None

    def on_start() -> None:  # called once the workers exist (see pool.py: fork before threads)
        nonlocal bar
        bar = tqdm(total=num_samples, initial=sum(r.plan.count for r in results.values()), unit="img",
                   desc=f"render {spec.kind}", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def landed(result: pool.ShardResult) -> None:
        results[result.plan.index] = tally.take(result)
        bar.update(result.plan.count)
        bar.set_postfix_str(f"shards {len(results)}/{len(plans)}", refresh=False)
        if on_shard:
            on_shard(output.shard_path(result), result)

    try:
        if distributed is not None:
            distributed.run_shards(worker_spec, todo, landed, on_start)
        else:
            pool.run_shards(worker_spec, todo, workers, landed, on_start)
    except OSError as error:
        raise BuildFailure(f"cannot write shards to {output.where}: {error.strerror or error}") from None
    finally:
        if bar is not None:
            bar.close()
        output.cleanup()
    render_seconds = time.perf_counter() - started

    ordered = [results[p.index] for p in plans]
    manifest = assemble(spec, generator, system, ordered, width, tally,
                        {"search_seconds": search_seconds, "render_seconds": render_seconds,
                         "rendered_samples": sum(p.count for p in todo), "workers": workers})
    problems = mf.validation_errors(manifest)
    assert not problems, f"manifest fails its own schema: {problems[:3]}"
    info = mf.timm_info(manifest)
    info_bytes = mf.to_json_text(info).encode("utf-8")
    # Recorded so that verify and publish check _info.json like any shard.
    manifest["timm_info"] = {"file": mf.TIMM_INFO_NAME, "bytes": len(info_bytes),
                             "sha256": hashlib.sha256(info_bytes).hexdigest()}
    output.commit(info, manifest, ordered)
    return manifest


def _write_json(path: str, payload: Any, resumable: bool = True) -> None:
    """write_json_atomic, its OSError (a full disk) as one BuildFailure line;
    the partial file is already gone, the shards and state file stay."""
    try:
        mf.write_json_atomic(path, payload)
    except OSError as error:
        hint = "; free space and run again with --resume to finish" if resumable else ""
        raise BuildFailure(f"cannot write {path}: {error.strerror or error}{hint}") from None


class SampleTally:
    """What the manifest keeps of the sample records as shards land: the
    attempts in all, and each class's record where a class is one sample.
    The records themselves stay in the shards, so the build holds
    O(classes) of them, not O(samples)."""

    def __init__(self, per_class: int):
        self.per_class = per_class
        self.attempts = 0
        self.classes: dict[int, dict[str, Any]] = {}

    def take(self, result: pool.ShardResult) -> pool.ShardResult:
        """Tally ``result``'s records; returns it without them."""
        for record in result.samples:
            # Every kind numbers its samples class-major: the manifest's label rule.
            assert record["label"] == record["index"] // self.per_class, \
                f"sample {record['index']} has label {record['label']}, not index // {self.per_class}"
            self.attempts += record.get("attempts", 1)
            if self.per_class == 1:
                self.classes[record["label"]] = mf.class_record(record)
        return dataclasses.replace(result, samples=[])


def assemble(spec: BuildSpec, generator, system: dict, results: list[pool.ShardResult], width: int,
             tally: SampleTally, timings: dict[str, Any]) -> dict[str, Any]:
    rendered = timings["rendered_samples"]
    seconds = timings["render_seconds"]
    per_class = tally.per_class
    classes = {"classes": [tally.classes[c] for c in range(generator.num_classes())]} if per_class == 1 else {}
    return {
        "schema_version": mf.SCHEMA_VERSION,
        "tool": mf.tool_record(),
        "kind": spec.kind,
        "seed": spec.seed,
        "params": dataclasses.asdict(generator.params),
        "num_samples": generator.num_samples(),
        "num_classes": generator.num_classes(),
        "samples_per_class": per_class,
        "image_size": generator.image_size(),
        "layout": {"prefix": spec.prefix, "shard_size": spec.shard_size, "key_width": width,
                   "shard_pattern": f"{spec.prefix}-%06d.tar",
                   "fields": {"png": "8-bit PNG (L or RGB)", "cls": "label, ASCII integer",
                              "json": mf.SAMPLE_JSON_FIELD}},
        "system": system,
        "streams": generator.streams(),
        **classes,
        "shards": [{"file": r.file, "index": r.plan.index, "first": r.plan.first, "count": r.plan.count,
                    "classes": mf.shard_classes(r.plan.first, r.plan.count, per_class),
                    "bytes": r.bytes, "sha256": r.sha256} for r in results],
        "timings": {**timings,
                    "samples_per_second": rendered / seconds if seconds > 0 and rendered else None,
                    "attempts": tally.attempts},
        "environment": mf.environment(),
    }
