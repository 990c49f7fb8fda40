"""The Kubernetes backend with ``staging = "s3"``: the official client against the test API
server (pods are real Podman containers: a curl stager init container, the gear, a finishing
container) and a real moto S3 server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from backends.base import BackendState, TaskStatus
from backends.errors import BackendError
from backends.kubernetes import KubernetesBackend, KubernetesSiteConfig, check_site
from backends.kubernetes.s3stage import OUTPUT_KEY, S3Staging
from backends.kubernetes.untar import member_parts
from broker.runtimes.podman import PodmanRuntime
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources, TaskSpec
from catalog.errors import ConfigError
from tests.backends.k8s_helpers import CLAIM, POD_UID, log_text, next_id, wait_for
from tests.backends.k8s_s3_helpers import build_stager_image
from tests.fixtures.engines import BUSYBOX_IMAGE, ContainerEngine
from tests.k8s_api import KubeTestServer

pytestmark = pytest.mark.podman
S = BackendState
RUNTIME = PodmanRuntime()
K8S_VERSIONS = ("1.28", "1.33")
ODD_ARG = 'it\'s $(HOME) "q"; echo injected'


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("s3k8s")


@pytest.fixture(scope="module")
def stager(podman_engine: ContainerEngine) -> str:
    return build_stager_image(podman_engine)


@pytest.fixture(scope="module")
def server(podman_engine: ContainerEngine, root: Path, stager: str) -> Iterator[KubeTestServer]:
    runtime = PodmanRuntime(
        binary=podman_engine.binary, env={"CONTAINERS_CONF": podman_engine.env["CONTAINERS_CONF"]}
    )
    api = KubeTestServer(runtime, {CLAIM: root}, root / ".server", slots=3).start()
    yield api
    api.stop()


def s3_site(bucket: str, endpoint: str, stager: str, **extra: Any) -> KubernetesSiteConfig:
    section = {
        "staging": "s3", "s3_bucket": bucket, "s3_prefix": "staging/",
        "s3_endpoint_url": endpoint, "s3_region": "us-east-1", "stager_image": stager,
        "run_as_user": POD_UID, "run_as_group": POD_UID, "retry_backoff_s": 0.05, **extra,
    }  # fmt: skip
    return KubernetesSiteConfig.from_mapping(section)


@pytest.fixture
def backend(
    server: KubeTestServer, tmp_path: Path, s3_endpoint: str, s3_bucket: str, stager: str
) -> Iterator[KubernetesBackend]:
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    k8s = KubernetesBackend(s3_site(s3_bucket, s3_endpoint, stager, kubeconfig=str(kubeconfig)))
    yield k8s
    k8s.close()


def s3_task(root: Path, argv: list[str], *, env: dict[str, str] | None = None) -> TaskSpec:
    """A task staged as the broker does: input/, output/, work/, config.json, manifest.json."""
    job_id = next_id()
    job_dir = root / "jobs" / f"{job_id}-1"
    v0 = job_dir / "v0"
    for sub in ("input/infile", "output", "work"):
        (v0 / sub).mkdir(parents=True)
    (job_dir / "logs").mkdir()
    (v0 / "input" / "infile" / "scan 1.bin").write_bytes(bytes(range(256)) * 40)
    (v0 / "config.json").write_text('{"config": {"message": "hi"}}')
    (v0 / "manifest.json").write_text('{"name": "test-gear"}')
    mounts = [
        Mount(str(v0 / "input"), f"{GEAR_ROOT}/input", read_only=True),
        Mount(str(v0 / "output"), f"{GEAR_ROOT}/output", read_only=False),
        Mount(str(v0 / "work"), f"{GEAR_ROOT}/work", read_only=False),
        Mount(str(v0 / "config.json"), f"{GEAR_ROOT}/config.json"),
        Mount(str(v0 / "manifest.json"), f"{GEAR_ROOT}/manifest.json"),
    ]
    container = ContainerSpec(
        name=f"gb-job-{job_id}-1", image=BUSYBOX_IMAGE, argv=argv, mounts=mounts,
        env=dict(env or {}), user=f"{POD_UID}:{POD_UID}", resources=Resources(cpus=0.5),
    )  # fmt: skip
    return TaskSpec(job_id, 1, str(job_dir), container, labels={"gear": "g:1", "user": "tester"})


def objects(client: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_gear_runs_with_inputs_outputs_and_log(
    backend: KubernetesBackend, root: Path, s3_client: Any, s3_bucket: str
) -> None:
    script = (
        'echo "arg=$1"; cat config.json; echo; '
        'sha256sum "input/infile/scan 1.bin" | cut -d" " -f1 > output/hash.txt; '
        'cp "input/infile/scan 1.bin" "output/copy 1.bin"; mkdir output/sub; '
        "echo nested > output/sub/x.txt; echo dots > output/..dots; "
        "ln -s /etc/passwd output/link; echo scratch > work/tmp; "
        "touch input/infile/forbidden 2>/dev/null || echo input-read-only"
    )
    task = s3_task(root, ["sh", "-c", script, "gear", ODD_ARG], env={"GREETING": "$(HOME)"})
    name = backend.submit(task, RUNTIME)
    assert f"staging/{name}/stage.tar" in objects(s3_client, s3_bucket)
    (status,) = wait_for(backend, [name], timeout=120)
    assert (status.state, status.exit_code, status.message) == (S.COMPLETED, 0, None)
    out = Path(task.job_dir) / "v0" / "output"
    data = bytes(range(256)) * 40
    assert (out / "copy 1.bin").read_bytes() == data
    assert (out / "hash.txt").read_text().strip() == hashlib.sha256(data).hexdigest()
    assert (out / "sub" / "x.txt").read_text() == "nested\n"
    assert (out / "..dots").read_text() == "dots\n"
    assert not (out / "link").exists() and not (out / "link").is_symlink()
    assert not (Path(task.job_dir) / "v0" / "work" / "tmp").exists()  # scratch stays in the pod
    log = log_text(task)
    assert log.startswith(f'arg={ODD_ARG}\n{{"config": {{"message": "hi"}}}}\ninput-read-only\n')
    assert "'v0/output/link' was not unpacked" in log
    assert objects(s3_client, s3_bucket) == []  # the staging prefix is cleaned up


def test_failing_gear_keeps_its_exit_code_and_partial_outputs(
    backend: KubernetesBackend, root: Path
) -> None:
    task = s3_task(root, ["sh", "-c", "echo partial > output/p.txt; echo failing; exit 3"])
    (status,) = wait_for(backend, [backend.submit(task, RUNTIME)], timeout=120)
    assert (status.state, status.exit_code, status.message) == (S.FAILED, 3, "exited with status 3")
    assert (Path(task.job_dir) / "v0/output/p.txt").read_text() == "partial\n"
    assert log_text(task) == "failing\n"


def test_walltime_and_cancel_clean_up_the_staging_prefix(
    backend: KubernetesBackend, root: Path, s3_client: Any, s3_bucket: str
) -> None:
    late = s3_task(root, ["sh", "-c", "echo started; sleep 60"])
    late = TaskSpec(
        late.job_id, 1, late.job_dir,
        ContainerSpec(**{**late.container.__dict__, "resources": Resources(0.5, walltime_s=10)}),
    )  # fmt: skip
    cancelled = s3_task(root, ["sh", "-c", "sleep 60"])
    ids = [backend.submit(t, RUNTIME) for t in (late, cancelled)]
    wait_for(backend, ids[1:], lambda s: s[0].state is S.RUNNING, timeout=60)
    assert backend.cancel(ids[1:]) == [True]
    timeout, gone = wait_for(backend, ids, timeout=120)
    assert timeout.state is S.TIMEOUT and "walltime" in (timeout.message or "")
    assert gone.state is S.CANCELLED
    assert log_text(late) == "started\n"
    assert objects(s3_client, s3_bucket) == []


def test_unreachable_staging_fails_in_the_init_container(
    server: KubeTestServer, tmp_path: Path, root: Path, s3_endpoint: str, s3_bucket: str,
    stager: str,
) -> None:  # fmt: skip
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    site = s3_site(
        s3_bucket, s3_endpoint, stager, kubeconfig=str(kubeconfig),
        s3_pod_endpoint_url="http://127.0.0.1:9",
    )  # fmt: skip
    backend = KubernetesBackend(site)
    try:
        task = s3_task(root, ["sh", "-c", "echo never"])
        (status,) = wait_for(backend, [backend.submit(task, RUNTIME)], timeout=120)
    finally:
        backend.close()
    assert status.state is S.FAILED and status.exit_code is None
    assert status.message == "staging failed: init container stage-in exited with status 1"
    assert "downloading the staged inputs failed" in log_text(task)


def hostile_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            body = b"" if kind != tarfile.REGTYPE else name.encode()
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))

        add("v0/output", tarfile.DIRTYPE)
        add("v0/output/ok.txt")
        add("v0/output/../../escape.txt")
        add("/abs.txt")
        add("v0/other.txt")
        add("v0/output/up", tarfile.SYMTYPE, "../..")
        add("v0/output/up/through-link.txt")
        add("v0/output/hard", tarfile.LNKTYPE, "v0/output/ok.txt")
        add("v0/output/dir", tarfile.DIRTYPE)
        add("v0/output/dir/inner.txt")
    return buffer.getvalue()


def test_hostile_output_archive_stays_inside_the_output_folder(
    tmp_path: Path, s3_client: Any, s3_bucket: str, s3_endpoint: str
) -> None:
    staging = S3Staging(s3_site(s3_bucket, s3_endpoint, "stager"), client=s3_client)
    job_dir = tmp_path / "deep" / "job"
    (job_dir / "logs").mkdir(parents=True)
    key = staging.prefix("gb-job-1-1-abcdef01") + OUTPUT_KEY
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=hostile_archive())
    before = TaskStatus("gb-job-1-1-abcdef01", S.COMPLETED, 0)
    status = staging.outcome(before.external_id, str(job_dir), "v0/output", before, lambda: b"")
    assert status == before
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == [
        "deep/job/logs/output.log",
        "deep/job/v0/output/dir/inner.txt",
        "deep/job/v0/output/ok.txt",
        "deep/job/v0/output/up/through-link.txt",  # the link was refused: a real folder
    ]
    assert (job_dir / "v0/output/ok.txt").read_text() == "v0/output/ok.txt"
    log = (job_dir / "logs/output.log").read_text()
    for name in ("../../escape.txt", "/abs.txt", "v0/other.txt", "output/up", "output/hard"):
        assert name in log
    assert member_parts("v0/output/a/../../x", "v0/output") is None
    assert member_parts("./v0//output/./a", "v0/output") == ["a"]


def test_completed_job_without_uploaded_outputs_fails(
    tmp_path: Path, s3_client: Any, s3_bucket: str, s3_endpoint: str
) -> None:
    staging = S3Staging(s3_site(s3_bucket, s3_endpoint, "stager"), client=s3_client)
    (tmp_path / "logs").mkdir()
    done = TaskStatus("gb-job-2-1-abcdef02", S.COMPLETED, 0)
    status = staging.outcome(
        done.external_id, str(tmp_path), "v0/output", done, lambda: b"curl: (7) refused\n"
    )
    assert status.state is S.FAILED and status.exit_code == 0
    assert status.message == (
        f"the pod uploaded no outputs to s3://{s3_bucket}/staging/gb-job-2-1-abcdef02/"
    )
    assert (tmp_path / "logs/output.log").read_text().endswith("]\ncurl: (7) refused\n")
    failed = TaskStatus(done.external_id, S.FAILED, 3, "exited with status 3")
    assert staging.outcome(done.external_id, str(tmp_path), "v0/output", failed, bytes) == failed


def test_manifest_validates_and_carries_no_credentials(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "gbSecretKeyThatMustNotLeak0123456789"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "gbSessionTokenThatMustNotLeak")
    site = s3_site(
        s3_bucket, s3_endpoint, "registry.example/stager:1", cpu_limits=False,
        s3_pod_endpoint_url="http://minio.storage.svc:9000",
    )  # fmt: skip
    backend = KubernetesBackend(site)
    task = s3_task(tmp_path, ["run", ODD_ARG], env={"A": "b"})
    manifest = backend.manifest(task)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)
    text = json.dumps(manifest)
    assert secret not in text and "secretKeyRef" not in text and "envFrom" not in text
    assert "X-Amz-Security-Token=gbSessionToken" in text  # temporary creds: only in the URLs
    assert "AWS_" not in text
    pod = manifest["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "gear-data", "emptyDir": {}}]
    assert [c["name"] for c in pod["initContainers"]] == ["stage-in"]
    gear, stage_out = pod["containers"]
    assert [c["name"] for c in pod["containers"]] == ["gear", "stage-out"]
    assert gear["env"] == [{"name": "A", "value": "b"}]
    assert gear["command"][:2] == ["sh", "-c"] and gear["command"][3:] == [
        "gearbroker", "run", ODD_ARG.replace("$", "$$"),
    ]  # fmt: skip
    assert {m["mountPath"]: m.get("subPath") for m in gear["volumeMounts"]} == {
        f"{GEAR_ROOT}/input": "stage/v0/input",
        f"{GEAR_ROOT}/output": "stage/v0/output",
        f"{GEAR_ROOT}/work": "stage/v0/work",
        f"{GEAR_ROOT}/config.json": "stage/v0/config.json",
        f"{GEAR_ROOT}/manifest.json": "stage/v0/manifest.json",
        "/gearbroker-status": "status",
    }
    for stager in (pod["initContainers"][0], stage_out):
        assert "env" not in stager and stager["image"] == "registry.example/stager:1"
        assert stager["securityContext"] == gear["securityContext"]
        assert all(a.startswith("http://minio.storage.svc:9000/") for a in stager["command"]
                   if a.startswith("http"))  # fmt: skip
    assert stage_out["command"][5] == "v0/output"
    assert manifest["metadata"]["annotations"]["gearbroker.io/output-path"] == "v0/output"
    assert (pod["restartPolicy"], manifest["spec"]["backoffLimit"]) == ("Never", 0)
    outside = s3_task(tmp_path, ["true"])
    moved = Mount("/elsewhere/input", f"{GEAR_ROOT}/input")
    container = ContainerSpec(**{**outside.container.__dict__, "mounts": [moved]})
    with pytest.raises(BackendError, match="not inside the job folder"):
        backend.manifest(TaskSpec(outside.job_id, 1, outside.job_dir, container))


def test_config_and_doctor_in_s3_mode(
    server: KubeTestServer, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    site = s3_site(s3_bucket, s3_endpoint, "stager:1")
    assert (site.staging, site.pvc_name, site.pod_endpoint_url) == ("s3", None, s3_endpoint)
    assert KubernetesSiteConfig.from_mapping({"pvc_name": "p", "pvc_root": "/x"}).staging == "pvc"
    for section, words in (
        ({"staging": "s3"}, "s3_bucket is required"),
        ({"staging": "nfs", "pvc_name": "p", "pvc_root": "/x"}, "staging must be one of"),
        ({"staging": "s3", "s3_bucket": "B_b"}, "invalid bucket name"),
        ({"staging": "s3", "s3_bucket": "bb1", "presign_ttl_s": 700000}, "presign_ttl_s"),
        ({"staging": "s3", "s3_bucket": "bb1", "s3_endpoint_url": "ftp://x"}, "not an http"),
    ):
        with pytest.raises(ConfigError, match=words):
            KubernetesSiteConfig.from_mapping(section)
    kubeconfig = server.kubeconfig(tmp_path / "kubeconfig")
    rows = check_site(s3_site(s3_bucket, s3_endpoint, "stager:1", kubeconfig=str(kubeconfig)))
    assert [(r.check, r.ok) for r in rows][-1] == ("staging", True), rows
    missing = s3_site("gb-no-such-bucket", s3_endpoint, "stager:1", kubeconfig=str(kubeconfig))
    last = check_site(missing)[-1]
    assert (last.check, last.ok) == ("staging", False) and "NoSuchBucket" in last.message
    assert os.environ.get("AWS_SECRET_ACCESS_KEY")  # the broker side uses the standard chain
