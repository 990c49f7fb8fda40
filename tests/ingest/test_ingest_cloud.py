"""gs:// and az:// sources against real emulators (gcp-storage-emulator, Azurite): the
source contract, and an ingest that matches the same corpus ingested from a folder."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli import cli
from catalog.catalog import Catalog
from catalog.errors import ConfigError
from ingest.sources import AzureBlobSource, BucketSource, GCSSource, SourceError, open_source
from ingest.sources import azure as azure_module
from ingest.sources import gcs as gcs_module
from tests.ingest.corpus import current_files, hazard_corpus, summary_counts
from tests.ingest.test_ingest_dicom import ingest
from tests.ingest.test_ingest_resume import _env

Put = Callable[[str, bytes], None]


@pytest.fixture(params=["gcs", "azure"])
def bucket(request: pytest.FixtureRequest) -> tuple[str, str | None, Put]:
    """``(url of the bucket, endpoint URL or None, put(name, data))`` on one emulator."""
    if request.param == "gcs":
        client, name = request.getfixturevalue("gcs_bucket")
        endpoint = request.getfixturevalue("gcs_endpoint")

        def put_gcs(key: str, data: bytes) -> None:
            client.bucket(name).blob(key).upload_from_string(data)

        return f"gs://{name}", endpoint, put_gcs
    container, name = request.getfixturevalue("azure_container")

    def put_azure(key: str, data: bytes) -> None:
        container.upload_blob(key, data)

    return f"az://{name}", None, put_azure


def _upload(put: Put, root: Path, prefix: str) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            put(f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes())


def test_bucket_source_lists_in_pages_resumes_and_reads_ranges(
    bucket: tuple[str, str | None, Put], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, endpoint, put = bucket
    for module in (gcs_module, azure_module):
        monkeypatch.setattr(module, "PAGE_SIZE", 4)  # 25 keys: seven pages
    for index in range(25):
        put(f"in/k{index:03d}", bytes([index]) * index)
    put("in/sub/deep", b"deep")
    put("other/file", b"no")
    put("in-sibling", b"not below in/")
    source = open_source(f"{url}/in", endpoint_url=endpoint)
    assert isinstance(source, GCSSource | AzureBlobSource)
    expected = [f"k{i:03d}" for i in range(25)] + ["sub/deep"]
    listed = list(source.iter_objects())
    assert [o.key for o in listed] == expected
    assert [o.size for o in listed] == [*range(25), 4] and all(o.etag for o in listed)
    for after in ("k000", "k019", "k024", "k0245", "sub/deep"):
        assert [o.key for o in source.iter_objects(after)] == [k for k in expected if k > after]
    assert source.read("k010") == bytes([10]) * 10
    assert source.read_range("k010", 2, 3) == bytes([10]) * 3
    assert source.read_range("k005", 3, 100) == bytes([5]) * 2  # fewer at the end
    assert source.read_range("k005", 1, 0) == b""
    with pytest.raises(SourceError, match="k999"):
        source.read("k999")
    clone = pickle.loads(pickle.dumps(source))
    assert clone._client is None and clone.read("sub/deep") == b"deep"
    missing = open_source(f"{url}-missing/in", endpoint_url=endpoint)
    with pytest.raises(SourceError, match="cannot list"):
        list(missing.iter_objects())


def test_bucket_ingest_matches_the_folder_ingest(
    catalog: Catalog, store_url: str, tmp_path: Path, bucket: tuple[str, str | None, Put]
) -> None:
    url, endpoint, put = bucket
    catalog.create_group("lab")
    corpus = hazard_corpus(tmp_path / "src")
    _upload(put, corpus.root, "export/2024")
    remote = ingest(
        catalog, store_url, f"{url}/export/2024", endpoint_url=endpoint, project="remote"
    )
    local = ingest(catalog, store_url, corpus.root, project="local")
    assert summary_counts(remote) == summary_counts(local)
    assert summary_counts(remote) == {"stored": corpus.instances, "error": 2, "duplicate": 1}
    by_project: dict[int | None, set[str]] = {}
    for file in current_files(catalog):
        by_project.setdefault(file.project_id, set()).add(file.sha256)
    first, second = by_project.values()
    assert first == second  # the same zips, byte for byte, from either source


def test_cli_ingests_from_azure_with_the_connection_string_variable(
    catalog: Catalog,
    db_url: str,
    store_url: str,
    tmp_path: Path,
    azure_container: tuple[Any, str],
    azure_connection_string: str,
) -> None:
    container, name = azure_container
    catalog.create_group("lab")
    for sub, key, text in [("a", "x.txt", "1"), ("a", "y.txt", "2"), ("b", "x.txt", "3")]:
        container.upload_blob(f"drop/{sub}/{key}", text.encode())
    env = {
        **_env(db_url, store_url, tmp_path),
        "AZURE_STORAGE_CONNECTION_STRING": azure_connection_string,
    }
    args = ["ingest", "folder", f"az://{name}/drop", "lab", "cloud", "--template", "{subject}/*"]
    result = CliRunner().invoke(cli, [*args, "--cluster", "threads", "--workers", "1"], env=env)
    assert result.exit_code == 0, result.output
    assert "status: stored 3" in result.output
    names = sorted((f.name, f.size) for f in current_files(catalog))
    assert names == [("x.txt", 1), ("x.txt", 1), ("y.txt", 1)]
    no_account: dict[str, str | None] = {**env, "AZURE_STORAGE_CONNECTION_STRING": None}
    args[2] = f"az://{name}-elsewhere/drop"  # a container whose client this process lacks
    failed = CliRunner().invoke(cli, [*args, "--dry-run"], env=no_account)
    assert isinstance(failed.exception, ConfigError)
    assert "no Azure storage account" in str(failed.exception)
    assert "started" not in failed.output  # refused before any run was recorded


def test_bucket_sources_share_one_client_per_process_and_address() -> None:
    a = GCSSource("b", "x", "http://127.0.0.1:9")
    b = GCSSource("b", "y", "http://127.0.0.1:9")
    assert isinstance(a, BucketSource) and a.client is b.client
    assert a.client is not GCSSource("b", "x", "http://127.0.0.1:8").client
