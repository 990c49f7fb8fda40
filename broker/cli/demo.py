"""``gearbroker demo``: the main job end to end on the embedded default.

Creates a catalog (SQLite + local blob store) in a work folder, uploads generated sample
data into a small hierarchy, sets metadata and runs a search.
"""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import click

from broker.cli.output import print_tree
from broker.config import load_settings, write_default_config
from catalog.catalog import Catalog
from catalog.dataview import write_rows
from catalog.errors import ConflictError
from catalog.query import columns_for

MARKER = ".gearbroker-demo"
DEMO_QUERY = 'file.type = dicom and subject.info.age > 40 and acquisition.label =~ "T1"'


def _fresh_workdir(workdir: Path) -> None:
    if workdir.exists():
        if not (workdir / MARKER).exists() and any(workdir.iterdir()):
            raise ConflictError(f"{workdir} exists and is not a gearbroker demo folder")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("created by gearbroker demo\n")


def _make_samples(root: Path, subjects: int) -> dict[str, int]:
    """sub-NN/ses-01/<series>/*.dcm plus a project-level participants.csv; returns ages."""
    from ingest.synthetic import demo_series, write_series

    ages = {}
    for n in range(1, subjects + 1):
        for spec in demo_series(n):
            write_series(spec, root / spec.patient_id / "ses-01" / spec.description)
            ages[spec.patient_id] = (spec.study_date - spec.birth_date).days // 365
    with (root / "participants.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["participant_id", "age"])
        writer.writerows(sorted(ages.items()))
    return ages


@click.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("gearbroker-demo"),
    show_default=True,
    help="Folder for the demo catalog (recreated on every run).",
)
@click.option("--subjects", type=click.IntRange(1, 50), default=3, show_default=True)
def demo(workdir: Path, subjects: int) -> None:
    """Run the end-to-end demo on the embedded default (SQLite, local store)."""
    workdir = workdir.resolve()
    _fresh_workdir(workdir)
    config = workdir / "config.toml"
    settings = load_settings(flags={"catalog.data_dir": str(workdir / "data")}, path=config)
    write_default_config(config, settings)
    click.echo(f"== catalog in {workdir} (config {config})")
    cat = Catalog.initialize(settings.database_url, settings.store_url, settings.user)
    try:
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
        rows = cat.search(DEMO_QUERY, target="file", columns=columns)
        count = write_rows(rows, columns, "table", sys.stdout)
        click.echo(f"   {count} matching file(s)")
        click.echo(f"== done; try: GEARBROKER_CONFIG={config} gearbroker ls demo/neuro -d 3")
    finally:
        cat.close()
