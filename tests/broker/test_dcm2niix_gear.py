"""A real DICOM-to-NIfTI gear: Debian's dcm2niix in an offline-built image."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.jobs import JobRequest
from broker.provenance import provenance_chain
from catalog.catalog import Catalog
from catalog.gears import install_gear
from catalog.models import File, JobState
from gearspec.examples import example_gear
from gearspec.manifest import load_manifest
from ingest.synthetic import SeriesSpec, uid_for, write_series_zip
from tests.broker.conftest_broker import broker_settings, run_to_end


@pytest.mark.parametrize("runtime", ["bwrap", "podman"])
def test_dcm2niix_converts_a_series_with_provenance(
    request: pytest.FixtureRequest,
    catalog: Catalog,
    tmp_path: Path,
    db_url: str,
    store_url: str,
    bwrap_rootfs: Path,
    runtime: str,
) -> None:
    if runtime == "podman":
        request.getfixturevalue("podman_engine")
    manifest = load_manifest(example_gear("dcm2niix"))
    install_gear(catalog, manifest.to_dict(), manifest.manifest_hash(), manifest.image)
    catalog.create_group("lab")
    catalog.create_project("lab", "mri")
    study = uid_for("P1", 1)
    spec = SeriesSpec("P1", "Doe^John", study, uid_for(study, 3), 3, "T1w_MPRAGE", slices=8)
    archive = write_series_zip(spec, tmp_path / "T1w_MPRAGE.dicom.zip")
    [up] = catalog.upload([archive], "lab/mri/P1/ses-1/T1w_MPRAGE")
    settings = broker_settings(tmp_path, db_url, store_url, runtime, bwrap_rootfs)
    job = run_to_end(
        catalog, settings, JobRequest(f"dcm2niix:{manifest.version}", {"dicom": up.path})
    )
    assert job.state == JobState.COMPLETE, job.reason_detail
    nifti = catalog.get("lab/mri/P1/ses-1/T1w_MPRAGE/files/T1w_MPRAGE.nii.gz")
    assert isinstance(nifti, File)
    assert (nifti.type, nifti.modality, nifti.info) == ("nifti", "MR", {"converter": "dcm2niix"})
    assert nifti.size > 8 * 64 * 64  # 8 slices of 64x64 voxels, compressed noise
    sidecar = catalog.get("lab/mri/P1/ses-1/T1w_MPRAGE/files/T1w_MPRAGE.json")
    out = tmp_path / "sidecar.json"
    catalog.download(catalog.path_of(sidecar), out)
    assert '"SeriesDescription": "T1w_MPRAGE"' in out.read_text()
    chain = provenance_chain(catalog, "lab/mri/P1/ses-1/T1w_MPRAGE/files/T1w_MPRAGE.nii.gz")
    assert chain["job"]["gear"] == f"dcm2niix:{manifest.version}"
    assert chain["job"]["inputs"][0]["sha256"] == up.sha256
