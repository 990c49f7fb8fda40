"""Rendered sbatch scripts: golden files for resource combinations, hostile values refused."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from backends.slurm import SlurmBackend, SlurmSiteConfig
from backends.slurm.script import ScriptError, format_walltime, job_script
from broker.runtimes import make_runtime
from broker.task import Resources
from broker.transport import LocalTransport
from catalog.errors import ConfigError
from tests.backends.slurm_helpers import FakeRuntime, make_task

GOLDEN = Path(__file__).parent / "golden"
ROOT = Path("/scratch/gb/jobs")
FULL_SITE = {
    "scratch_root": "/scratch/gb",
    "partition": "gpu,gpu-long",
    "account": "neuro-lab",
    "qos": "normal",
    "gpu_type": "a100",
    "setup": ["module load apptainer/1.2", "export APPTAINER_CACHEDIR=/scratch/gb/.cache"],
    "sbatch_flags": ["--constraint=avx2", "--exclusive"],
}

CASES: dict[str, tuple[dict[str, Any], Resources, int, bool]] = {
    "single_defaults": ({"scratch_root": "/scratch/gb"}, Resources(), 1, False),
    "single_full": (
        FULL_SITE,
        Resources(cpus=2.5, memory_mb=4096, gpus=2, walltime_s=90061),
        1,
        False,
    ),
    "single_mem_per_cpu": (
        {"scratch_root": "/scratch/gb", "memory_flag": "mem-per-cpu", "partition": "short"},
        Resources(cpus=4, memory_mb=10000, walltime_s=600),
        1,
        True,
    ),
    "array_three": (
        {"scratch_root": "/scratch/gb", "array_concurrency": 2, "setup": ["module load x"]},
        Resources(cpus=1, memory_mb=512, walltime_s=59),
        3,
        True,
    ),
    "array_default_walltime": (
        {"scratch_root": "/scratch/gb", "array_concurrency": 0, "default_walltime_s": 3600},
        Resources(),
        2,
        False,
    ),
}


def _render(name: str) -> str:
    section, resources, count, stop = CASES[name]
    site = SlurmSiteConfig.from_mapping(section)
    backend = SlurmBackend(site, LocalTransport())
    tasks = [
        make_task(ROOT, 10 + i, f"echo gear {i}", resources=resources, create=False)
        for i in range(count)
    ]
    return backend.job_script(tasks, FakeRuntime(stop=stop))


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_scripts(name: str) -> None:
    text = _render(name)
    assert text == (GOLDEN / f"{name}.sh").read_text()
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)


def test_render_is_the_single_job_script() -> None:
    site = SlurmSiteConfig.from_mapping({"scratch_root": "/scratch/gb"})
    task = make_task(ROOT, 10, "echo gear 0", create=False)
    backend = SlurmBackend(site, LocalTransport())
    assert backend.render(task, FakeRuntime()) == (GOLDEN / "single_defaults.sh").read_text()


def test_hostile_command_words_stay_words(tmp_path: Path) -> None:
    """A gear command with shell syntax and newlines reaches the runtime as the same words."""
    site = SlurmSiteConfig.from_mapping({"scratch_root": str(tmp_path)})
    nasty = "x'; touch /tmp/pwned; echo '\n#SBATCH --wrap=evil $(id) `id` \"q\""
    task = make_task(tmp_path, 1, nasty)
    evil_image = type(task.container)(
        **{**task.container.__dict__, "image": "img\n#SBATCH --wrap=evil"}
    )
    task = type(task)(job_id=1, attempt=1, job_dir=task.job_dir, container=evil_image)
    script = job_script([task], FakeRuntime(), site)
    assert all("wrap" not in line for line in script.splitlines() if line.startswith("#SBATCH"))
    # Execute the array assignment and print the words back.
    line = next(li for li in script.splitlines() if li.startswith("gb_run=("))
    start = script.index(line)
    end = script.index("\ngb_stop=(")
    probe = script[start:end] + '\nprintf "%s\\0" "${gb_run[@]}"\n'
    done = subprocess.run(["bash", "-c", probe], capture_output=True, check=True)
    words = done.stdout.decode().split("\0")[:-1]
    assert words == FakeRuntime().argv(task.container)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("partition", "--wrap"),
        ("partition", "--wrap=rm -rf /"),
        ("partition", "debug\n#SBATCH --wrap=id"),
        ("partition", "debug,"),
        ("account", "lab x"),
        ("account", "lab\n"),
        ("qos", "-q"),
        ("gpu_type", "a100:8"),
        ("setup", ["module load x\nrm -rf /"]),
        ("setup", ["ok\r"]),
        ("sbatch_flags", ["--wrap=id"]),
        ("sbatch_flags", ["--time=99:00:00"]),
        ("sbatch_flags", ["--array=0-9"]),
        ("sbatch_flags", ["--output=/etc/passwd"]),
        ("sbatch_flags", ["-p debug"]),
        ("sbatch_flags", ["--constraint=a b"]),
        ("sbatch_flags", ["--constraint=a\n#SBATCH --wrap=id"]),
        ("sbatch_flags", ["--comment='x'"]),
        ("scratch_root", "relative/path"),
        ("scratch_root", "/scratch/with space"),
        ("scratch_root", "/scratch/%j"),
        ("scratch_root", "/scratch/../etc"),
        ("memory_flag", "mem-per-gpu"),
        ("accounting", "maybe"),
        ("max_array_size", 0),
        ("array_concurrency", -1),
        ("ssh_host", "-oProxyCommand=id"),
    ],
)
def test_hostile_config_values_are_rejected(key: str, value: object) -> None:
    section = {"scratch_root": "/scratch/gb", key: value}
    with pytest.raises(ConfigError):
        SlurmSiteConfig.from_mapping(section)


@pytest.mark.parametrize(
    "resources",
    [
        Resources(cpus=float("nan")),
        Resources(cpus=float("inf")),
        Resources(cpus=0),
        Resources(memory_mb=-1),
        Resources(gpus=-1),
        Resources(gpus=True),
        Resources(walltime_s=0),
        Resources(walltime_s=float("inf")),  # type: ignore[arg-type]
        Resources(memory_mb="1G; id"),  # type: ignore[arg-type]
    ],
)
def test_hostile_resources_are_rejected(resources: Resources) -> None:
    site = SlurmSiteConfig.from_mapping({"scratch_root": "/scratch/gb"})
    task = make_task(ROOT, 1, "true", resources=resources, create=False)
    with pytest.raises(ScriptError):
        job_script([task], FakeRuntime(), site)


@pytest.mark.parametrize("job_dir", ["/scratch/a b", "/scratch/a\nb", "/scratch/%A", "rel/x"])
def test_unsafe_job_folders_are_rejected(job_dir: str) -> None:
    site = SlurmSiteConfig.from_mapping({"scratch_root": "/scratch/gb"})
    task = make_task(Path("/scratch"), 1, "true", create=False)
    bad = type(task)(job_id=1, attempt=1, job_dir=job_dir, container=task.container)
    with pytest.raises(ScriptError):
        job_script([bad], FakeRuntime(), site)


def test_array_tasks_must_share_resources() -> None:
    site = SlurmSiteConfig.from_mapping({"scratch_root": "/scratch/gb"})
    tasks = [
        make_task(ROOT, 1, "true", create=False),
        make_task(ROOT, 2, "true", resources=Resources(cpus=2), create=False),
    ]
    with pytest.raises(ScriptError, match="same resources"):
        job_script(tasks, FakeRuntime(), site)


def test_config_from_environment_strings() -> None:
    site = SlurmSiteConfig.from_mapping(
        {
            "scratch_root": "/scratch/gb",
            "ssh.host": "login1.example.org",
            "ssh.port": "2222",
            "ssh_agent": "no",
            "setup": '["module load a, b", "module load c"]',
            "sbatch_flags": "--constraint=x, --exclusive",
            "status_min_interval_s": "2.5",
        }
    )
    assert (site.ssh_host, site.ssh_port, site.ssh_agent) == ("login1.example.org", 2222, False)
    assert site.setup == ("module load a, b", "module load c")
    assert site.sbatch_flags == ("--constraint=x", "--exclusive")
    assert site.status_min_interval_s == 2.5
    assert site.command("sbatch") == "sbatch"
    assert (
        SlurmSiteConfig.from_mapping({"scratch_root": "/s", "bin_dir": "/opt/slurm/bin/"}).command(
            "squeue"
        )
        == "/opt/slurm/bin/squeue"
    )


@pytest.mark.parametrize(
    "section",
    [
        {},
        {"scratch_root": "/s", "partion": "typo"},
        {"scratch_root": "/s", "ssh_port": "22x"},
        {"scratch_root": "/s", "ssh_port": True},
        {"scratch_root": "/s", "ssh_agent": "perhaps"},
        {"scratch_root": "/s", "setup": "[not json"},
        {"scratch_root": "/s", "setup": [1, 2]},
        {"scratch_root": 5},
    ],
)
def test_config_errors_name_the_problem(section: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"backends\.slurm"):
        SlurmSiteConfig.from_mapping(section)


def test_walltime_format() -> None:
    assert format_walltime(59) == "00:00:59"
    assert format_walltime(3600) == "01:00:00"
    assert format_walltime(90061) == "1-01:01:01"


def test_apptainer_command_line_in_a_slurm_script(tmp_path: Path) -> None:
    """The script runs exactly the Apptainer runtime's argv (checked as words, no binary)."""
    site = SlurmSiteConfig.from_mapping(
        {"scratch_root": str(tmp_path), "setup": ["module load apptainer"]}
    )
    runtime = make_runtime("apptainer", local_paths=False)
    tasks = [
        make_task(tmp_path, i, f"echo {i}", resources=Resources(gpus=1), create=False)
        for i in range(2)
    ]
    script = job_script(tasks, runtime, site)
    runs = [line.strip() for line in script.splitlines() if line.strip().startswith("gb_run=(")]
    assert len(runs) == 2
    for line, task in zip(runs, tasks, strict=True):
        probe = f'{line}\nprintf "%s\\0" "${{gb_run[@]}}"\n'
        done = subprocess.run(["bash", "-c", probe], capture_output=True, check=True)
        words = done.stdout.decode().split("\0")[:-1]
        assert words == runtime.argv(task.container)
        assert words[:2] == ["apptainer", "exec"]
        assert "--nv" in words
        assert f"{task.job_dir}/v0:/flywheel/v0:rw" in words
        assert words[-3:] == ["sh", "-c", f"echo {task.job_id}"]
    assert "#SBATCH --gres=gpu:1" in script
    assert script.index("module load apptainer") > script.index("esac")
