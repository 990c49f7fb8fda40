"""``gearbroker demo``: the main job end to end on the embedded default.

Creates a catalog (SQLite + local blob store) in a work folder, uploads generated sample
data into a small hierarchy, sets metadata and runs a search.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import click

from broker.cli.output import print_tree
from broker.config import Settings, load_settings, write_default_config
from broker.jobs import JobRequest, create_job, get_job
from broker.provenance import provenance_chain
from broker.wiring import make_dispatcher
from catalog.catalog import Catalog
from catalog.dataview import write_rows
from catalog.errors import ConfigError, ConflictError, GearbrokerError
from catalog.gears import install_gear
from catalog.query import columns_for
from gearspec.examples import example_gear
from gearspec.manifest import load_manifest
from ingest.synthetic import demo_series, write_series_zip

MARKER = ".gearbroker-demo"
DEMO_IMAGE = "localhost/gearbroker/dcm2niix:1"
DEMO_QUERY = 'file.type = dicom and subject.info.age > 40 and acquisition.label =~ "T1"'


def _fresh_workdir(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists() and any(workdir.iterdir()):
            raise ConflictError(f"{workdir} exists and is not a gearbroker demo folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("created by gearbroker demo\n")


def _make_samples(root: Path, subjects: int) -> dict[str, int]:
    """sub-NN/ses-01/<series>/<series>.dicom.zip plus a participants.csv; returns ages."""
    ages = {}
    for n in range(1, subjects + 1):
        for spec in demo_series(n):
            folder = root / spec.patient_id / "ses-01" / spec.description
            write_series_zip(spec, folder / f"{spec.description}.dicom.zip")
            ages[spec.patient_id] = (spec.study_date - spec.birth_date).days // 365
    with (root / "participants.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["participant_id", "age"])
        writer.writerows(sorted(ages.items()))
    return ages


def _gear_config(workdir: Path, runtime: str, rootfs: Path | None) -> str:
    """Config lines for the demo gear's runtime (JSON strings are valid TOML strings)."""
    lines = ["", "[broker]", f"runtime = {json.dumps(runtime)}", "poll_interval = 0.2"]
    if runtime == "bwrap":
        if rootfs is None or not (rootfs / "usr" / "bin" / "dcm2niix").exists():
            raise ConfigError(
                "the demo gear runs with bwrap from an offline-built root filesystem: run "
                "`bash scripts/demo.sh` (it builds it), or pass --gear-rootfs DIR, or choose "
                "--runtime podman|docker with the localhost/gearbroker/dcm2niix:1 image"
            )
        lines += [
            "[runtimes.bwrap.images]",
            f"{json.dumps(DEMO_IMAGE)} = {json.dumps(str(rootfs.resolve()))}",
        ]
    return "\n".join(lines) + "\n"


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("gearbroker-demo"),
    show_default=True,
    help="Folder for the demo catalog (recreated on every run).",
)
@click.option("--subjects", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option(
    "--runtime",
    type=click.Choice(["bwrap", "podman", "docker"]),
    default="bwrap",
    show_default=True,
    help="Container runtime for the demo gear.",
)
@click.option(
    "--gear-rootfs",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Root filesystem of the dcm2niix image (for bwrap).",
)
def demo(workdir: Path, subjects: int, runtime: str, gear_rootfs: Path | None) -> None:
    """Run the end-to-end demo on the embedded default (SQLite, local store, local Dask)."""
    workdir = workdir.resolve()
    _fresh_workdir(workdir)
    config = workdir / "config.toml"
    settings = load_settings(flags={"catalog.data_dir": str(workdir / "data")}, path=config)
    write_default_config(config, settings)
    with config.open("a") as fh:
        fh.write(_gear_config(workdir, runtime, gear_rootfs))
    settings = load_settings(path=config)
    click.echo(f"== catalog in {workdir} (config {config})")
    cat = Catalog.initialize(settings.database_url, settings.store_url, settings.user)
    try:
        _catalog_part(cat, workdir, subjects)
        _gear_part(cat, settings)
        click.echo(f"== done; try: GEARBROKER_CONFIG={config} gearbroker ls demo/neuro -d 4")
    finally:
        cat.close()


def _catalog_part(cat: Catalog, workdir: Path, subjects: int) -> None:
    cat.create_group("demo")
    cat.create_project("demo", "neuro")
    samples = workdir / "samples"
    ages = _make_samples(samples, subjects)
    click.echo(f"== upload {samples} -> demo/neuro")
    results = cat.upload([samples], "demo/neuro")
    click.echo(f"   {len(results)} files uploaded")
    for subject, age in ages.items():
        cat.info_set(f"demo/neuro/{subject}", {"age": age, "cohort": "demo"})
    cat.tags_add("demo/neuro/sub-01/ses-01/T1w_MPRAGE", ["qa-passed"])
    click.echo("== hierarchy")
    print_tree(cat.tree("demo/neuro", depth=3, files=False))
    click.echo(f"== search: {DEMO_QUERY}")
    columns = columns_for(
        "file",
        ["subject.label", "subject.info.age", "acquisition.label", "file.name", "file.size"],
    )
    count = write_rows(
        cat.search(DEMO_QUERY, target="file", columns=columns), columns, "table", sys.stdout
    )
    click.echo(f"   {count} matching file(s)")


def _gear_part(cat: Catalog, settings: Settings) -> None:
    manifest = load_manifest(example_gear("dcm2niix"))
    install_gear(cat, manifest.to_dict(), manifest.manifest_hash(), manifest.image)
    click.echo(f"== gear installed: {manifest.name}:{manifest.version} ({manifest.image})")
    source = "demo/neuro/sub-01/ses-01/T1w_MPRAGE/files/T1w_MPRAGE.dicom.zip"
    job = create_job(
        cat, JobRequest(f"{manifest.name}:{manifest.version}", {"dicom": source}, backend="local")
    )
    click.echo(
        f"== run {manifest.name} on {source}: job {job.id} (local Dask backend, {settings.runtime})"
    )
    make_dispatcher(cat, settings).serve(only={job.id}, timeout=300)
    done = get_job(cat, job.id)
    click.echo(
        f"   job {done.id}: {done.state}"
        + (f" ({done.reason}: {done.reason_detail})" if done.reason else "")
    )
    if done.state != "complete":
        raise GearbrokerError(f"the demo gear failed: {done.reason_detail}")
    for out in (done.provenance or {}).get("outputs", []):
        click.echo(f"   output {out['path']} ({out['size']} bytes)")
    nifti = "demo/neuro/sub-01/ses-01/T1w_MPRAGE/files/T1w_MPRAGE.nii.gz"
    click.echo(f"== provenance of {nifti}")
    click.echo(json.dumps(provenance_chain(cat, nifti), indent=2, default=str))
