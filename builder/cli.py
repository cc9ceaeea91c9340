"""``fracbuild``: the command line. It parses options and delegates; every
user error becomes one line on stderr and exit code 2."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from typing import Any

import click

from . import __version__, build, verify as verify_mod
from . import manifest as mf
from .atomic import check_writable
from .errors import BuildFailure, InterruptibleGroup, UserError, run_cli
from .generators import DEFAULT_KIND, KINDS, get_kind
from .kind_options import kind_options, param_flags
from .location import Location, is_remote
from .shards import DEFAULT_SHARD_SIZE

ENDPOINT_HELP = ("S3-compatible endpoint for an s3:// LOCATION (R2, MinIO, ...). [default: "
                 "$FRACBUILD_ENDPOINT_URL, else botocore's configuration]")


def _count(number: int, noun: str) -> str:
    """``1 shard``, ``3 shards``."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def _data_set_folder(location: str) -> str:
    """LOCATION as the data set's folder or prefix: a path to its manifest.json
    names its folder; any other file is a UserError."""
    trimmed = location.rstrip("/")
    if os.path.basename(trimmed) == mf.MANIFEST_NAME:
        return os.path.dirname(trimmed) or "."
    if "://" not in location and os.path.isfile(location):
        raise UserError(f"LOCATION {location} is a file; give the data set's folder (the one holding "
                        f"{mf.MANIFEST_NAME}) or its {mf.MANIFEST_NAME}")
    return location


def _in_flag_words(message: str) -> str:
    """A build's "option(s) num_classes, delta differs" as the flags typed
    ("--L, --delta differ")."""
    found = re.search(r"option\(s\) ([a-z_]+(?:, [a-z_]+)*) differs", message)
    if not found:
        return message
    known = param_flags(KINDS.values())
    flags = [known.get(name, name) for name in found.group(1).split(", ")]
    words = f"{flags[0]} differs" if len(flags) == 1 else f"{', '.join(flags)} differ"
    return message[:found.start()] + words + message[found.end():]


def _given_params(ctx: click.Context, values: dict[str, Any], kind: str | None = None) -> dict[str, Any]:
    """The generator parameters the user set; with ``kind``, a UserError naming
    the flags that kind does not take."""
    flags = param_flags(KINDS.values())
    given = {name: value for name, value in values.items()
             if name in flags and ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)}
    if kind is not None:
        taken = {field.name for field in dataclasses.fields(get_kind(kind).Params)}
        foreign = [flags[name] for name in given if name not in taken]
        if foreign:
            what = f"{foreign[0]} is not an option" if len(foreign) == 1 else f"{', '.join(foreign)} are not options"
            accepted = ", ".join(sorted(flags[name] for name in taken))
            raise UserError(f"{what} of --kind {kind} (it takes {accepted})")
    return given


def _search_command() -> click.Command:
    """``search``, with the options of 1p-frac, whose base system it finds
    (other kinds search inside ``render``)."""

    @click.command()
    @kind_options([get_kind(DEFAULT_KIND)], hide_kind=True, choices=KINDS)
    @click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
                  help="Where to write the chosen system (JSON; render --ifs takes it).")
    @click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
    @click.option("--force", "force", is_flag=True, hidden=True)  # the old spelling of --overwrite
    @click.pass_context
    def search(ctx: click.Context, **options: Any) -> None:
        """Find a 1p-frac base system: sample from --seed until one passes the
        fill check and enough of its trial perturbations pass too; write it to --out."""
        _search(ctx, **options)

    return search


def _search(ctx: click.Context, out_path: str, overwrite: bool, force: bool, kind: str, seed: int,
            **values: Any) -> None:
    if os.path.exists(out_path) and not (overwrite or force):
        raise UserError(f"--out {out_path} exists; pass --overwrite to replace it")
    check_writable(out_path)  # before the search, not after it
    generator_cls = get_kind(kind)
    params = generator_cls.make_params(_given_params(ctx, values, kind))
    system = generator_cls.prepare(params, seed, _log)
    payload = {"kind": kind, "seed": seed, "params": json.loads(json.dumps(vars(params))), "system": system}
    mf.write_json_atomic(out_path, payload)
    _log(f"wrote {out_path}")
    click.echo(json.dumps({"out": out_path, **{k: system[k] for k in system if not isinstance(system[k], list)}}))


def timeout_option(function):
    """--timeout, shared by every command that may talk to an object store."""
    return click.option("--timeout", type=float, default=None, metavar="SECONDS",
                        help="Longest a remote operation may take, its retries included, seconds; each request waits "
                             "at most a quarter of it to connect and for each read. [default: $FRACBUILD_TIMEOUT, "
                             "else 30]")(function)


def _read_ifs(path: str, kind: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except OSError as error:
        raise UserError(f"cannot read --ifs {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise UserError(f"--ifs {path} is not valid JSON: {error}") from None
    system = payload.get("system") if isinstance(payload, dict) else None
    if payload.get("kind", kind) != kind if isinstance(payload, dict) else True:
        raise UserError(f"--ifs {path} is not a {kind} system (written by 'fracbuild search')")
    if not isinstance(system, dict) or "maps" not in system or "probabilities" not in system:
        raise UserError(f"--ifs {path} has no system with maps and probabilities (write one with 'fracbuild search')")
    return system


def _render_command() -> click.Command:
    """``render``, with the options of every kind in the registry."""

    @click.command()
    @kind_options(list(KINDS.values()))
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
                  metavar="DIR|s3://BUCKET/PREFIX",
                  help="Output directory for the shards, manifest.json and _info.json, or an s3://bucket/prefix "
                       "that every worker writes its shards to directly (the manifest last).")
    @click.option("--ifs", "ifs_path", type=click.Path(dir_okay=False),
                  help="Use this base system (from 'fracbuild search') instead of searching.")
    @click.option("--manifest", "manifest_path", type=click.Path(),
                  help="Rebuild the data set this manifest describes, byte for byte (other options are ignored).")
    @click.option("--name", "prefix", default=None, help="Shard name prefix: NAME-000000.tar. [default: the kind]")
    @click.option("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, show_default=True,
                  help="Samples per shard (256 gives 83 shards at L = 21,000: every one of 8 GPUs x 8 loader "
                       "workers gets a shard).")
    @click.option("--workers", type=int, default=os.cpu_count() or 1, show_default="CPU count",
                  help="Worker processes rendering shards.")
    @click.option("--resume", is_flag=True, help="Finish an interrupted build in --out (same options).")
    @click.option("--overwrite", is_flag=True, help="Replace the data set in --out.")
    @click.option("--progress/--no-progress", default=True, help="Progress bar on stderr. [default: on]")
    @click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
    @click.option("--publish", "publish_url", metavar="URL",
                  help="Also upload a local --out to this s3:// prefix: each shard as it is complete, the manifest "
                       "last.")
    @click.option("--endpoint-url", metavar="URL",
                  help="S3-compatible endpoint for an s3:// --out or --publish (R2, MinIO, ...). [default: "
                       "$FRACBUILD_ENDPOINT_URL, else botocore's configuration]")
    @timeout_option
    @click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
                  help="Render each shard (and the fractaldb/ofdb search) as a Ray task: 'auto' joins the cluster "
                       "of this machine, HOST:PORT another one, no value starts a Ray here with --workers CPUs. "
                       "--out must be an s3:// prefix or the same path on every node. Same bytes as without. "
                       "[default: off]")
    @click.option("--ray-retries", type=int, default=3, show_default=True,
                  help="With --ray: times a failed shard task (worker killed, node lost, I/O error) is run again "
                       "before the build fails.")
    @click.pass_context
    def render(ctx: click.Context, **options: Any) -> None:
        """Render a data set into WebDataset shards (searching for the base system
        first unless --ifs or --manifest gives one); the manifest is written last."""
        _render(ctx, **options)

    return render


def _render(ctx: click.Context, out_dir: str, ifs_path: str | None, manifest_path: str | None,
            prefix: str | None, shard_size: int, workers: int, resume: bool, overwrite: bool,
            progress: bool, as_json: bool, publish_url: str | None, endpoint_url: str | None,
            timeout: float | None, ray_address: str | None, ray_retries: int, kind: str, seed: int,
            **values: Any) -> None:
    system = None
    if manifest_path:
        recorded = Location(manifest_path if os.path.isdir(manifest_path) else os.path.dirname(manifest_path) or ".")
        manifest = (recorded.read_manifest() if os.path.isdir(manifest_path) else mf.read_manifest(manifest_path))
        spec = build.spec_from_manifest(manifest)
        system = manifest["system"]
    else:
        spec = build.BuildSpec(kind=kind, seed=seed, params=_given_params(ctx, values, kind),
                               prefix=prefix or kind, shard_size=shard_size)
        build.resolve(spec)  # every option is checked before any file is read or written
        if ifs_path:
            system = _read_ifs(ifs_path, kind)
    remote_out = is_remote(os.fspath(out_dir))
    if publish_url and remote_out:
        raise UserError(f"--publish needs a local --out; --out {out_dir} already writes to object storage")
    if endpoint_url and not (publish_url or remote_out):
        raise UserError("--endpoint-url needs --publish or an s3:// --out")
    if not ray_address and ctx.get_parameter_source("ray_retries") is not click.core.ParameterSource.DEFAULT:
        raise UserError("--ray-retries needs --ray")
    streamer = None
    if publish_url:
        from .publish import ShardStreamer

        streamer = ShardStreamer(Location(publish_url, endpoint_url=endpoint_url, timeout=timeout), out_dir,
                                 overwrite=overwrite, log=_log)
    distributed = None
    try:
        if ray_address:
            from .ray_exec import RayExecutor

            distributed = RayExecutor(ray_address, workers=workers, max_retries=ray_retries)
        manifest = build.run_build(spec, out_dir, workers=workers, resume=resume, overwrite=overwrite,
                                   system=system, progress=progress, log=_log, on_shard=streamer,
                                   distributed=distributed, endpoint_url=endpoint_url if not publish_url else None,
                                   timeout=timeout)
        published = streamer.finish(progress=progress) if streamer else None
    except UserError as error:
        raise UserError(_in_flag_words(str(error))) from None
    finally:
        if distributed:
            distributed.close()
        if streamer:
            streamer.close()
    summary = _summary(manifest, out_dir)
    _log(f"wrote {_count(summary['num_samples'], 'sample')} in {_count(summary['shards'], 'shard')} to {out_dir}"
         + (f" ({summary['samples_per_second']:.0f} samples/s)" if summary["samples_per_second"] else ""))
    if published:
        _log(published.message())
        summary["published"] = published.summary()
    if as_json:
        click.echo(json.dumps(summary))


def _summary(manifest: dict[str, Any], where: str) -> dict[str, Any]:
    timings = manifest["timings"]
    return {
        "location": where, "kind": manifest["kind"], "seed": manifest["seed"],
        "num_samples": manifest["num_samples"], "num_classes": manifest["num_classes"],
        "image_size": manifest["image_size"], "shards": len(manifest["shards"]),
        "bytes": sum(s["bytes"] for s in manifest["shards"]),
        "search_seconds": timings.get("search_seconds"), "render_seconds": timings.get("render_seconds"),
        "samples_per_second": timings.get("samples_per_second"), "attempts": timings.get("attempts"),
    }


@click.command()
@click.argument("location")
@click.option("--deep", type=int, default=0, show_default=True,
              help="Also re-render this many samples from the manifest and compare pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Chooses the --deep samples.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr. [default: on]")
@click.option("--endpoint-url", metavar="URL", help=ENDPOINT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON line on stdout.")
@timeout_option
def verify(location: str, deep: int, seed: int, progress: bool, endpoint_url: str | None, as_json: bool,
           timeout: float | None) -> None:
    """Check LOCATION (a directory or s3:// prefix) against its manifest:
    schema, num_samples against the classes and shards, shards' sizes,
    sha256 and counts, decodable samples at the declared size with their
    labels and records, every label present. Exit 1 and list problems on
    mismatch."""
    from tqdm import tqdm

    if deep < 0:
        raise UserError(f"--deep must be >= 0, got {deep}")
    where = Location(_data_set_folder(location), endpoint_url=endpoint_url, timeout=timeout)
    bars: list[Any] = []  # made once the manifest tells the total, so the bar shows it and an ETA

    def start(total: int) -> None:
        bars.append(tqdm(total=total, unit="img", desc="verify", disable=not progress, file=sys.stderr,
                         dynamic_ncols=True))

    try:
        manifest, problems = verify_mod.verify(where, deep=deep, seed=seed, progress=lambda n: bars[0].update(n),
                                               on_total=start)
    finally:
        for bar in bars:
            bar.close()
    if as_json:
        click.echo(json.dumps({"location": location, "ok": not problems, "problems": problems,
                               "num_samples": manifest["num_samples"], "shards": len(manifest["shards"]),
                               "re_rendered": min(deep, manifest["num_samples"]) if deep and not problems else 0}))
    if problems:
        for problem in problems:
            click.echo(f"problem: {problem}", err=True)
        raise BuildFailure(f"{location}: {_count(len(problems), 'problem')} found")
    _log(f"{location}: OK, {_count(manifest['num_samples'], 'sample')} in {_count(len(manifest['shards']), 'shard')}"
         + (f", {min(deep, manifest['num_samples'])} re-rendered identically" if deep else ""))


@click.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.argument("destination")
@click.option("--endpoint-url", metavar="URL",
              help="S3-compatible endpoint (R2, MinIO, ...). [default: $FRACBUILD_ENDPOINT_URL, else botocore's "
                   "configuration: AWS_ENDPOINT_URL, the profile]")
@click.option("--jobs", type=int, default=8, show_default=True, help="Objects uploaded at once.")
@click.option("--part-size", type=int, default=16, show_default=True,
              help="Multipart part size, MiB (>= 5); objects of at least twice this go up in parts.")
@click.option("--trust-metadata", is_flag=True,
              help="Count an object as already there when its size and the sha256 recorded at upload "
                   "match the manifest, without reading it back (saves egress on re-runs).")
@click.option("--overwrite", is_flag=True, help="Replace a different data set already published at DESTINATION.")
@click.option("--dry-run", is_flag=True, help="List what would be uploaded and kept; move nothing.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr. [default: on]")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@timeout_option
def publish(source: str, destination: str, endpoint_url: str | None, jobs: int, part_size: int,
            trust_metadata: bool, overwrite: bool, dry_run: bool, progress: bool, as_json: bool,
            timeout: float | None) -> None:
    """Upload the finished data set in SOURCE to DESTINATION (s3://bucket/prefix):
    every shard, then the manifest last, each checked by sha256 after upload.
    A re-run uploads only what is missing or wrong. Credentials come from the
    standard AWS chain (environment, profile, instance role)."""
    from .publish import MIB, publish as publish_data_set

    where = Location(destination, endpoint_url=endpoint_url, timeout=timeout)
    report = publish_data_set(source, where, jobs=jobs,
                              dry_run=dry_run, trust_metadata=trust_metadata, overwrite=overwrite,
                              part_size=part_size * MIB, progress=progress, log=_log)
    _log(report.message())
    if as_json:
        click.echo(json.dumps(report.summary()))


@click.command()
@click.argument("location")
@click.option("--out", "out_path", default="preview.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG contact sheet to write.")
@click.option("--count", type=int, default=8, show_default=True, help="Classes shown.")
@click.option("--thumb", type=int, default=128, show_default=True, help="Thumbnail side, pixels.")
@click.option("--endpoint-url", metavar="URL", help=ENDPOINT_HELP)
@timeout_option
def preview(location: str, out_path: str, count: int, thumb: int, endpoint_url: str | None,
            timeout: float | None) -> None:
    """Write a contact sheet of the first classes and their difference from class 0."""
    from .preview import write_preview

    if count < 1:
        raise UserError(f"--count must be >= 1, got {count}")
    if thumb < 8:
        raise UserError(f"--thumb must be >= 8, got {thumb}")
    write_preview(Location(_data_set_folder(location), endpoint_url=endpoint_url, timeout=timeout), out_path,
                  count, thumb)
    _log(f"wrote {out_path}")


@click.command()
@click.argument("location")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON line on stdout.")
@click.option("--endpoint-url", metavar="URL", help=ENDPOINT_HELP)
@timeout_option
def info(location: str, as_json: bool, endpoint_url: str | None, timeout: float | None) -> None:
    """A short summary of the data set at LOCATION (its folder, s3:// prefix
    or manifest.json), and where its manifest contradicts itself."""
    manifest = Location(_data_set_folder(location), endpoint_url=endpoint_url, timeout=timeout).read_manifest()
    summary = _summary(manifest, location)
    disagreements = mf.disagreements(manifest)
    summary["manifest_problems"] = disagreements
    if as_json:
        click.echo(json.dumps(summary))
        return
    for problem in disagreements:
        _log(f"warning: {problem} (fracbuild verify fails it)")
    params = manifest["params"]
    click.echo(f"{location}: {manifest['kind']}, {summary['num_samples']} samples, {summary['num_classes']} classes, "
               f"{summary['image_size']}x{summary['image_size']} px")
    click.echo(f"  seed {manifest['seed']}; " + ", ".join(f"{k}={v}" for k, v in params.items()))
    click.echo(f"  {_count(summary['shards'], 'shard')}, {summary['bytes'] / 1e6:.1f} MB; built by fracbuild "
               f"{manifest['tool']['version']}")


def make_cli() -> click.Group:
    """fracbuild's commands; render's and search's options are generated from
    the registry of kinds as it stands when this is called."""

    @click.group(cls=InterruptibleGroup,
                 context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
    @click.version_option(__version__, prog_name="fracbuild")
    def cli() -> None:
        """Build minimal synthetic pre-training data sets (1p-frac and kin) into
        byte-reproducible WebDataset shards with a JSON manifest."""
    for command in (_search_command(), _render_command(), verify, publish, preview, info):
        cli.add_command(command)
    return cli


cli = make_cli()


def _log(message: str) -> None:
    click.echo(message, err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns every known failure into one line."""
    return run_cli(cli, argv, "fracbuild", interrupted="interrupted: run again with --resume to finish")


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
