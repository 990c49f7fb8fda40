"""Gear rules: classify then convert a DICOM series, exactly once per file version."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from broker import rules_admin
from broker.provenance import provenance_chain
from broker.rules_admin import RuleSpec
from catalog.catalog import Catalog
from catalog.errors import InvalidInputError, PermissionDeniedError
from catalog.models import File, Job, JobState
from catalog.rules import compile_match
from ingest.synthetic import SeriesSpec, uid_for, write_series_zip
from tests.broker.automation_helpers import drain, install_classifier, install_dcm2niix
from tests.broker.conftest_broker import broker_settings

ACQ = "lab/mri/P1/ses-1/T1w"


@pytest.fixture
def series_zip(tmp_path: Path) -> Path:
    study = uid_for("P1", 1)
    spec = SeriesSpec("P1", "Doe^John", study, uid_for(study, 5), 5, "T1w", slices=6)
    return write_series_zip(spec, tmp_path / "src" / "T1w.dicom.zip")


@pytest.fixture
def rules_project(catalog: Catalog) -> Catalog:
    catalog.create_group("lab")
    catalog.create_project("lab", "mri")
    classifier = install_classifier(catalog)
    dcm2niix = install_dcm2niix(catalog)
    rules_admin.save_rule(
        catalog,
        "lab/mri",
        RuleSpec(name="classify", gear=classifier.split(":")[0], match={"type": "dicom"}),
    )
    rules_admin.save_rule(
        catalog,
        "lab/mri",
        RuleSpec(
            name="convert",
            gear=dcm2niix,
            trigger="file-metadata-changed",
            match={"all": [{"type": "dicom"}, {"classification": {"Intent": "Structural"}}]},
        ),
    )
    return catalog


def _jobs(cat: Catalog) -> list[Job]:
    with cat.db.session(readonly=True) as session:
        return list(session.scalars(select(Job).options(selectinload(Job.gear)).order_by(Job.id)))


def test_rules_chain_and_fire_once_per_version(
    rules_project: Catalog,
    series_zip: Path,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
) -> None:
    cat = rules_project
    settings = broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs)
    [up] = cat.upload([series_zip], ACQ)
    drain(cat, settings)
    jobs = _jobs(cat)
    assert [(j.rule_id is not None, j.state) for j in jobs] == [(True, "complete")] * 2
    classify, convert = jobs
    assert classify.gear.name == "test-classifier" and convert.gear.name == "dcm2niix"
    assert classify.trigger_file_id == convert.trigger_file_id == up.file_id
    dicom = cat.get(f"{ACQ}/files/T1w.dicom.zip")
    assert isinstance(dicom, File)
    assert dicom.classification == {"Intent": ["Structural"], "Measurement": ["T1"]}
    chain = provenance_chain(cat, f"{ACQ}/files/T1w.nii.gz")
    assert chain["job"]["id"] == convert.id
    # nothing fires twice for the same version: more metadata changes, another pass
    cat.tags_add(f"{ACQ}/files/T1w.dicom.zip", ["reviewed"])
    cat.info_set(f"{ACQ}/files/T1w.dicom.zip", {"checked": True})
    drain(cat, settings)
    assert len(_jobs(cat)) == 2
    # a new version is a new file version: both rules fire again, once each
    series_zip.write_bytes(series_zip.read_bytes() + b"\0")
    [v2] = cat.upload([series_zip], ACQ)
    assert v2.version == 2
    drain(cat, settings)
    jobs = _jobs(cat)
    assert len(jobs) == 4 and {j.trigger_file_id for j in jobs[2:]} == {v2.file_id}


UPLOADER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from catalog.catalog import Catalog
    cat = Catalog.open(sys.argv[1], sys.argv[2], "admin")
    cat.upload([Path(sys.argv[3])], sys.argv[4])
    """
)


def test_two_processes_uploading_the_same_file_fire_each_rule_once(
    rules_project: Catalog,
    series_zip: Path,
    db_url: str,
    store_url: str,
    tmp_path: Path,
    bwrap_rootfs: Path,
) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", UPLOADER, db_url, store_url, str(series_zip), ACQ],
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    drain(rules_project, broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs))
    assert [j.gear.name for j in _jobs(rules_project)] == ["test-classifier", "dcm2niix"]


def test_preview_backfill_and_yaml(rules_project: Catalog, tmp_path: Path, as_user: object) -> None:
    cat = rules_project
    rules_admin.set_enabled(cat, "lab/mri", "classify", False)
    (tmp_path / "a.dcm").write_bytes(b"not really dicom")
    cat.upload([tmp_path / "a.dcm"], "lab/mri/P2/s/a")
    assert rules_admin.preview(cat, "lab/mri", "classify")[0][2] == "would fire"
    created = rules_admin.backfill(cat, "lab/mri", "classify")
    assert len(created) == 1
    assert rules_admin.preview(cat, "lab/mri", "classify")[0][2] == "fired"
    assert rules_admin.backfill(cat, "lab/mri", "classify") == []
    assert len(rules_admin.backfill(cat, "lab/mri", "classify", rerun=True)) == 1
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(
        textwrap.dedent("""
        rules:
          - name: nifti-qa
            gear: test-classifier
            match: {any: [{type: nifti}, {name: {regex: '\\.nii(\\.gz)?$'}}]}
            priority: high
    """)
    )
    [saved] = rules_admin.load_rules(cat, "lab/mri", rules_file)
    assert saved.options == {"priority": "high"}
    rules_file.write_text("- name: bad\n  gear: test-classifier\n  match: {colour: red}\n")
    with pytest.raises(InvalidInputError, match="unknown keys"):
        rules_admin.load_rules(cat, "lab/mri", rules_file)
    cat.add_permission("lab/mri", "viewer", "ro")
    with pytest.raises(PermissionDeniedError):
        rules_admin.save_rule(
            as_user("viewer"),
            "lab/mri",  # type: ignore[operator]
            RuleSpec(name="x", gear="test-classifier", match={"type": "x"}),
        )


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"all": []},
        {"not": {"type": "a"}, "type": "b"},
        {"name": {"regex": "("}},
        {"level": "planet"},
        {"classification": "T1"},
        {"tags": [1]},
    ],
)
def test_bad_match_trees_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidInputError):
        compile_match(bad)


def test_rule_errors_are_recorded(
    rules_project: Catalog, tmp_path: Path, db_url: str, store_url: str, bwrap_rootfs: Path
) -> None:
    cat = rules_project
    rules_admin.set_enabled(cat, "lab/mri", "convert", False)
    (tmp_path / "x.dcm").write_bytes(b"x")
    cat.upload([tmp_path / "x.dcm"], "lab/mri/P3/s/a")
    rule = rules_admin.get_rule(cat, "lab/mri", "classify")
    with cat.db.session() as session:  # break the rule behind its back: its gear vanishes
        row = session.get(type(rule), rule.id)
        assert row is not None
        row.gear_name = "no-such-gear"
    drain(cat, broker_settings(tmp_path, db_url, store_url, "bwrap", bwrap_rootfs))
    _recent, errors = rules_admin.rule_activity(
        cat, rules_admin.get_rule(cat, "lab/mri", "classify")
    )
    assert errors and "not installed" in errors[0].detail["error"]
    assert all(j.state == JobState.COMPLETE for j in _jobs(cat))
