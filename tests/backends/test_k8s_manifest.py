"""The Job manifest: structure, sanitising, site options, and the official JSON schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.errors import BackendError
from backends.kubernetes import KubernetesBackend, KubernetesSiteConfig, job_manifest, job_name
from backends.kubernetes.manifest import escape, label_value, pinned_image
from broker.runtimes.podman import PodmanRuntime
from broker.task import GEAR_ROOT, ContainerSpec, Mount, Resources, TaskSpec
from catalog.errors import ConfigError
from tests.backends.k8s_helpers import make_task, site_config

#: Kubernetes versions whose strict schemas every manifest must pass.
K8S_VERSIONS = ("1.28", "1.33")
DIGEST = "sha256:" + "ab" * 32


def validate(manifest: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def full_site(root: Path) -> KubernetesSiteConfig:
    return KubernetesSiteConfig.from_mapping(
        {
            "pvc_name": "gb-shared",
            "pvc_root": str(root),
            "namespace": "imaging",
            "instance": "lab-a",
            "service_account": "gear-runner",
            "priority_class": "batch-low",
            "node_selector": {"kubernetes.io/arch": "amd64", "gpu": "yes"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gears", "effect": "NoSchedule"},
                {"operator": "Exists", "effect": "NoExecute", "toleration_seconds": 60},
            ],
            "image_pull_secrets": ["regcred"],
            "image_pull_policy": "Always",
            "default_memory_mb": 2048,
            "default_walltime_s": 7200,
            "ttl_seconds_after_finished": 600,
            "run_as_user": 4242,
        }
    )


def test_minimal_manifest_contract(tmp_path: Path) -> None:
    task = make_task(tmp_path, "echo hi", job_id=7, resources=Resources(cpus=1.5, memory_mb=512))
    manifest = job_manifest(task, site_config(tmp_path))
    validate(manifest)
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["name"] == job_name(task.key, task.job_dir)
    assert meta["name"].startswith("gb-job-7-1-")
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "gearbroker"
    assert meta["labels"]["gearbroker.io/job-id"] == "7"
    assert meta["labels"]["gearbroker.io/network"] == "none"
    assert meta["annotations"]["gearbroker.io/job-dir"] == task.job_dir
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 86400
    assert "activeDeadlineSeconds" not in spec
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == meta["labels"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["command"] == ["sh", "-c", "echo hi"]
    assert container["resources"] == {
        "requests": {"cpu": "1500m", "memory": "512Mi"},
        "limits": {"cpu": "1500m", "memory": "512Mi"},
    }
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts[f"{GEAR_ROOT}/output"]["subPath"] == "jobs/7-1/v0/output"
    assert mounts[f"{GEAR_ROOT}/output"]["readOnly"] is False
    assert mounts[f"{GEAR_ROOT}/config.json"]["readOnly"] is True
    assert pod["volumes"] == [
        {"name": "gear-data", "persistentVolumeClaim": {"claimName": "gb-shared"}}
    ]


def test_site_options_reach_the_pod(tmp_path: Path) -> None:
    task = make_task(tmp_path, "true", resources=Resources(cpus=2, gpus=1, walltime_s=60))
    manifest = job_manifest(task, full_site(tmp_path), DIGEST)
    validate(manifest)
    assert manifest["metadata"]["namespace"] == "imaging"
    assert manifest["metadata"]["labels"]["gearbroker.io/instance"] == "lab-a"
    assert manifest["spec"]["activeDeadlineSeconds"] == 60  # the gear's walltime wins
    assert manifest["spec"]["ttlSecondsAfterFinished"] == 600
    pod = manifest["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gear-runner"
    assert pod["priorityClassName"] == "batch-low"
    assert pod["nodeSelector"] == {"kubernetes.io/arch": "amd64", "gpu": "yes"}
    assert pod["tolerations"][1] == {
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 60,
    }
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["securityContext"]["runAsUser"] == 4242
    container = pod["containers"][0]
    assert container["image"] == f"localhost/gearbroker/busybox:1@{DIGEST}"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {
        "cpu": "2",
        "memory": "2048Mi",
        "nvidia.com/gpu": "1",
    }


def test_site_defaults_fill_missing_walltime_and_memory(tmp_path: Path) -> None:
    manifest = job_manifest(make_task(tmp_path, "true"), full_site(tmp_path))
    assert manifest["spec"]["activeDeadlineSeconds"] == 7200
    assert manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "500m",
        "memory": "2048Mi",
    }


def test_dollar_signs_survive_kubernetes_expansion(tmp_path: Path) -> None:
    task = make_task(tmp_path, "echo $(date) $HOME $$", env={"A": "$(B)x"})
    container = job_manifest(task, site_config(tmp_path))["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert container["command"][2] == "echo $$(date) $$HOME $$$$"
    assert container["env"] == [{"name": "A", "value": "$$(B)x"}]
    assert escape("a$b") == "a$$b"


def test_labels_are_sanitised_and_annotations_keep_the_truth(tmp_path: Path) -> None:
    gear = "weird gear/name:1.0+build" + "x" * 80
    task = make_task(tmp_path, "true", labels={"gear": gear, "user": "ann@example.org"})
    manifest = job_manifest(task, site_config(tmp_path))
    validate(manifest)
    labels = manifest["metadata"]["labels"]
    assert len(labels["gearbroker.io/gear"]) <= 63
    assert labels["gearbroker.io/user"] == "ann-example.org"
    assert manifest["metadata"]["annotations"]["gearbroker.io/gear"] == gear
    assert label_value("--x--") == "x"
    assert label_value("***") == ""


def test_job_names_differ_per_job_folder() -> None:
    one = job_name("gb-job-5-1", "/srv/a/jobs/5-1")
    other = job_name("gb-job-5-1", "/srv/b/jobs/5-1")
    assert one != other
    assert one == job_name("gb-job-5-1", "/srv/a/jobs/5-1")


def test_mount_outside_pvc_root_is_refused(tmp_path: Path) -> None:
    task = make_task(tmp_path / "elsewhere", "true")
    with pytest.raises(BackendError, match=r"not below backends\.kubernetes\.pvc_root"):
        job_manifest(task, site_config(tmp_path / "pvc"))


def test_root_user_is_refused_without_a_site_identity(tmp_path: Path) -> None:
    base = make_task(tmp_path, "true")
    container = ContainerSpec(
        name=base.container.name,
        image=base.container.image,
        argv=base.container.argv,
        mounts=base.container.mounts,
        user="0:0",
    )
    task = TaskSpec(job_id=1, attempt=1, job_dir=base.job_dir, container=container)
    site = KubernetesSiteConfig.from_mapping({"pvc_name": "p", "pvc_root": str(tmp_path)})
    with pytest.raises(BackendError, match="run_as_user"):
        job_manifest(task, site)
    manifest = job_manifest(task, site_config(tmp_path))
    assert manifest["spec"]["template"]["spec"]["securityContext"]["runAsUser"] > 0


def test_digest_pinning_rules() -> None:
    assert pinned_image("x/y:1", DIGEST) == f"x/y:1@{DIGEST}"
    assert pinned_image(f"x/y@{DIGEST}", "sha256:" + "cd" * 32) == f"x/y@{DIGEST}"
    assert pinned_image("x/y:1", "md5:abc") == "x/y:1"
    assert pinned_image("x/y:1", None) == "x/y:1"


def test_render_prints_yaml_pinned_by_the_staged_manifest(tmp_path: Path) -> None:
    task = make_task(tmp_path, "true")
    staged = {"name": "g", "custom": {"gearbroker": {"image-digest": DIGEST}}}
    (Path(task.job_dir) / "v0" / "manifest.json").write_text(json.dumps(staged))
    backend = KubernetesBackend(site_config(tmp_path))
    text = backend.render(task, PodmanRuntime())
    doc = yaml.safe_load(text)
    validate(doc)
    assert doc["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST)
    assert KubernetesBackend.runtimes == frozenset()


_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    argv=st.lists(_text, min_size=1, max_size=4).filter(lambda a: a[0] != ""),
    env=st.dictionaries(
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True), _text, max_size=4
    ),
    gear=_text,
    user=_text,
    cpus=st.floats(min_value=0.001, max_value=64),
    memory=st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
    gpus=st.integers(min_value=0, max_value=8),
    walltime=st.one_of(st.none(), st.integers(min_value=1, max_value=10**7)),
    network=st.booleans(),
    job_id=st.integers(min_value=1, max_value=10**12),
)
def test_any_task_renders_a_schema_valid_job(
    tmp_path: Path,
    argv: list[str],
    env: dict[str, str],
    gear: str,
    user: str,
    cpus: float,
    memory: int | None,
    gpus: int,
    walltime: int | None,
    network: bool,
    job_id: int,
) -> None:
    container = ContainerSpec(
        name=f"gb-job-{job_id}-3",
        image="registry.example.org/lab/gear:1.2.3",
        argv=argv,
        mounts=[Mount(str(tmp_path / f"jobs/{job_id}-3/v0/input"), f"{GEAR_ROOT}/input")],
        env=env,
        user="1000:1000",
        network=network,
        resources=Resources(cpus=cpus, memory_mb=memory, gpus=gpus, walltime_s=walltime),
    )
    task = TaskSpec(
        job_id=job_id,
        attempt=3,
        job_dir=str(tmp_path / f"jobs/{job_id}-3"),
        container=container,
        labels={"gear": gear, "user": user},
    )
    manifest = job_manifest(task, full_site(tmp_path))
    validate(manifest)
    assert len(manifest["metadata"]["name"]) <= 63
    assert yaml.safe_load(yaml.safe_dump(manifest)) == manifest


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"pvc_root": "/x"}, "pvc_name is required"),
        ({"pvc_name": "p"}, "pvc_root is required"),
        ({"pvc_name": "P_Q", "pvc_root": "/x"}, "invalid Kubernetes name"),
        ({"pvc_name": "p", "pvc_root": "rel"}, "absolute path"),
        ({"pvc_name": "p", "pvc_root": "/x", "namespace": "No"}, "invalid namespace"),
        ({"pvc_name": "p", "pvc_root": "/x", "instance": "a b"}, "not a label value"),
        ({"pvc_name": "p", "pvc_root": "/x", "colour": "blue"}, "unknown key"),
        ({"pvc_name": "p", "pvc_root": "/x", "run_as_user": 0}, ">= 1"),
        (
            {"pvc_name": "p", "pvc_root": "/x", "image_pull_policy": "Sometimes"},
            "image_pull_policy",
        ),
        ({"pvc_name": "p", "pvc_root": "/x", "node_selector": {"a b": "c"}}, "node_selector"),
        (
            {"pvc_name": "p", "pvc_root": "/x", "tolerations": [{"operator": "Equal"}]},
            "without key",
        ),
        ({"pvc_name": "p", "pvc_root": "/x", "tolerations": [{"colour": "x"}]}, "unknown keys"),
        ({"pvc_name": "p", "pvc_root": "/x", "retries": "many"}, "an integer"),
        ({"pvc_name": "p", "pvc_root": "/x", "in_cluster": "maybe"}, "true or false"),
    ],
)
def test_bad_config_is_refused_with_the_key_named(section: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        KubernetesSiteConfig.from_mapping(section)


def test_config_from_environment_strings_and_dotted_tables() -> None:
    site = KubernetesSiteConfig.from_mapping(
        {
            "pvc": {"name": "shared", "root": "/mnt/shared"},
            "node_selector": '{"zone": "a"}',
            "image_pull_secrets": "one,two",
            "tolerations": '[{"key": "k", "operator": "Exists"}]',
            "retries": "3",
            "in_cluster": "yes",
            "pending_timeout_s": "12.5",
        }
    )
    assert (site.pvc_name, site.pvc_root) == ("shared", "/mnt/shared")
    assert dict(site.node_selector) == {"zone": "a"}
    assert site.image_pull_secrets == ("one", "two")
    assert site.tolerations[0].to_dict() == {"operator": "Exists", "key": "k"}
    assert (site.retries, site.in_cluster, site.pending_timeout_s) == (3, True, 12.5)
    assert site.selector == "app.kubernetes.io/managed-by=gearbroker,gearbroker.io/instance=default"
