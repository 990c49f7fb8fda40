"""Gear-rule benchmark: uploads into a project with 5 rules against the same upload without rules.

Usage: ``python benchmarks/rules.py [--files 10000] [--round-files 400] [--database URL]
[--json out.json]``

Writes ``--files`` small files (unique bytes) twice, in a tree of up to 50 subjects x 2
sessions x N acquisitions with four files each (``.dicom.zip``, ``.nii.gz``, ``.json``,
``.txt``), cut into rounds of about ``--round-files``.  One catalog holds two projects:
``bench/plain`` without rules and ``bench/rules`` with five (classifier on DICOM; dcm2niix on
classified DICOM on metadata change; QA on NIfTI by name regex at acquisition level; one on a
tag nothing carries; one disabled).  Each round uploads its folder into both projects with
``Catalog.upload`` (which side goes first alternates), then runs ``RuleEngine.fire`` until no
trigger is queued.  Timed per round:

- upload without rules, upload with rules (ratio rules/plain: the rule matching overhead);
- upload with rules + firing every trigger into a job (ratio against the plain upload: the
  end-to-end cost of getting all jobs queued);
- ``enqueue_rule_matches`` (rule evaluation and trigger inserts), wrapped in this process,
  per file of the rules project.

Quotes medians over rounds.  ``--database`` takes a PostgreSQL server URL (a database is
created there and dropped afterwards) or a SQLite URL; default: a new SQLite file.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/catalog.py would shadow the ``catalog`` package: keep this folder off the path;
# the repository root gives the test gear manifest (tests.fixtures.gears).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE.parent))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402
from unittest import mock  # noqa: E402

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402
from sqlalchemy import func, make_url, select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from broker.rule_engine import RuleEngine  # noqa: E402
from broker.rules_admin import RuleSpec, save_rule  # noqa: E402
from catalog import transfer  # noqa: E402
from catalog.catalog import Catalog  # noqa: E402
from catalog.gears import install_gear  # noqa: E402
from catalog.models import AuditEvent, File, Job, RuleTrigger  # noqa: E402
from catalog.rules import enqueue_rule_matches  # noqa: E402
from gearspec.examples import example_gear  # noqa: E402
from gearspec.manifest import load_manifest  # noqa: E402
from tests.fixtures.gears import gear_manifest  # noqa: E402

GOAL_RATIO = 1.1
SUBJECTS = 50
SESSIONS = 2
PROTOCOLS = ("T1w", "T2w", "bold", "dwi", "fmap")
SUFFIXES = (".dicom.zip", ".nii.gz", ".json", ".txt")
QA_REGEX = "^(T1w|T2w|bold)_"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="gb-bench-rules-") as tmp,
        _database(args.database, Path(tmp)) as url,
    ):
        root = Path(tmp)
        rounds = write_tree(root / "src", args.files, args.round_files)
        cat = Catalog.initialize(url, str(root / "blobs"), "admin")
        try:
            setup(cat)
            results = run(cat, rounds)
            results["checks"] = check(cat)
        finally:
            cat.close()
    results.update(files=args.files, rounds=len(rounds), dialect=make_url(url).get_dialect().name)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="files per project")
    parser.add_argument("--round-files", type=int, default=400, help="files per round")
    parser.add_argument(
        "--database", help="PostgreSQL server URL or SQLite URL (default: a new SQLite file)"
    )
    parser.add_argument("--json", help="write the results here")
    return parser


@contextmanager
def _database(url: str | None, tmp: Path) -> Iterator[str]:
    """A fresh catalog database URL; PostgreSQL databases are created and dropped here."""
    if url is None:
        yield f"sqlite:///{tmp / 'catalog.db'}"
        return
    server = make_url(url)
    if server.get_dialect().name != "postgresql":
        yield url
        return
    name = f"gb_bench_rules_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(name)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(ident))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def layout(files: int) -> list[tuple[str, str, str, str]]:
    """(subject, session, acquisition, file name) for ``files`` files, subject by subject."""
    per_session = max(1, math.ceil(files / (SUBJECTS * SESSIONS * len(SUFFIXES))))
    out = []
    for s in range(1, SUBJECTS + 1):
        for ses in range(1, SESSIONS + 1):
            for a in range(per_session):
                proto = PROTOCOLS[a % len(PROTOCOLS)]
                acq = f"{proto}_run-{a // len(PROTOCOLS) + 1}"
                out += [(f"sub-{s:03d}", f"ses-{ses}", acq, acq + suffix) for suffix in SUFFIXES]
    return out[:files]


def write_tree(src: Path, files: int, round_files: int) -> list[dict[str, Path]]:
    """Per round, a folder per side (``plain``, ``rules``) of sub/ses/acq/file with unique
    bytes (the blob store deduplicates by content); rounds end at subject boundaries."""
    rounds: list[dict[str, Path]] = []
    count = 0
    for sub, ses, acq, name in layout(files):
        if not rounds or (
            count >= round_files and not (src / f"r{len(rounds)}" / "plain" / sub).exists()
        ):
            rounds.append({side: src / f"r{len(rounds) + 1}" / side for side in ("plain", "rules")})
            count = 0
        for side, folder in rounds[-1].items():
            path = folder / sub / ses / acq / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(f"{side}/{sub}/{ses}/{acq}/{name}\n".encode() + os.urandom(2048))
        count += 1
    return rounds


def _install(cat: Catalog, doc: dict[str, Any] | Path) -> str:
    manifest = load_manifest(doc)
    install_gear(cat, manifest.to_dict(), manifest.manifest_hash(), manifest.image)
    return f"{manifest.name}:{manifest.version}"


def setup(cat: Catalog) -> None:
    """Group ``bench``, projects ``plain`` and ``rules``, four gears and the five rules."""
    cat.create_group("bench")
    cat.create_project("bench", "plain")
    cat.create_project("bench", "rules")
    classifier = gear_manifest(name="bench-classifier", category="classifier")
    classifier["inputs"] = {"dicom": {"base": "file", "type": {"enum": ["dicom"]}}}
    classifier["config"] = {}
    qa = gear_manifest(name="bench-qa", category="qa")
    qa["inputs"] = {"nifti": {"base": "file", "type": {"enum": ["nifti"]}}}
    _install(cat, classifier)
    dcm2niix = _install(cat, example_gear("dcm2niix"))
    _install(cat, qa)
    echo = _install(cat, gear_manifest(name="bench-echo", category="utility"))
    for spec in (
        RuleSpec("classify", "bench-classifier", {"type": "dicom"}),
        RuleSpec(
            "convert",
            dcm2niix,
            {"all": [{"type": "dicom"}, {"classification": {"Intent": "Structural"}}]},
            trigger="file-metadata-changed",
        ),
        RuleSpec(
            "qa",
            "bench-qa",
            {"all": [{"type": "nifti"}, {"name": {"regex": QA_REGEX}}, {"level": "acquisition"}]},
            config={"message": "qa"},
            options={"priority": "low"},
        ),
        RuleSpec("reprocess", echo, {"tags": ["reprocess"]}),
        RuleSpec("sidecars", echo, {"name": "*.json"}, enabled=False),
    ):
        save_rule(cat, "bench/rules", spec)


class EnqueueTimer:
    """Wraps ``enqueue_rule_matches`` as the upload code calls it; sums time and files."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.files = 0

    def __call__(self, session: Session, files: Sequence[File], event: str) -> int:
        start = time.perf_counter()
        try:
            return enqueue_rule_matches(session, files, event)
        finally:
            self.seconds += time.perf_counter() - start
            self.files += len(files)

    def take(self) -> tuple[float, int]:
        out = (self.seconds, self.files)
        self.seconds, self.files = 0.0, 0
        return out


def _fire_all(cat: Catalog, engine: RuleEngine) -> int:
    created = 0
    while True:
        created += engine.fire()
        with cat.db.session(readonly=True) as session:
            if not session.scalar(select(func.count()).select_from(RuleTrigger)):
                return created


def run(cat: Catalog, rounds: list[dict[str, Path]]) -> dict[str, Any]:
    timer = EnqueueTimer()
    with mock.patch.object(transfer, "enqueue_rule_matches", timer):
        return _rounds(cat, rounds, timer)


class Clock:
    """Wall time and this process's CPU time of a block (CPU time is less disturbed by other
    load on the machine; it leaves out the database server and waits for the disk)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu


def _rounds(cat: Catalog, rounds: list[dict[str, Path]], timer: EnqueueTimer) -> dict[str, Any]:
    engine = RuleEngine(cat)
    per_round: list[dict[str, float]] = []
    for i, folders in enumerate(rounds):
        clocks = {"plain": Clock(), "rules": Clock(), "fire": Clock()}
        enqueue: dict[str, float] = {}
        for side in ("plain", "rules") if i % 2 == 0 else ("rules", "plain"):
            timer.take()
            with clocks[side].measure():
                n = len(cat.upload([folders[side]], f"bench/{side}"))
            enqueue[side], _ = timer.take()
        with clocks["fire"].measure():
            created = _fire_all(cat, engine)
        plain, rules, fire = clocks["plain"], clocks["rules"], clocks["fire"]
        per_round.append(
            {
                "files": n,
                "jobs": created,
                "plain_ms_per_file": 1000 * plain.wall / n,
                "rules_ms_per_file": 1000 * rules.wall / n,
                "fire_ms_per_job": 1000 * fire.wall / max(created, 1),
                "eval_ms_per_file": 1000 * enqueue["rules"] / n,
                "eval_plain_ms_per_file": 1000 * enqueue["plain"] / n,
                "upload_ratio": rules.wall / plain.wall,
                "e2e_ratio": (rules.wall + fire.wall) / plain.wall,
                "upload_ratio_cpu": rules.cpu / plain.cpu,
                "e2e_ratio_cpu": (rules.cpu + fire.cpu) / plain.cpu,
                "plain_s": plain.wall,
                "rules_s": rules.wall,
                "fire_s": fire.wall,
            }
        )
    med = {
        key: statistics.median(r[key] for r in per_round)
        for key in per_round[0]
        if key not in ("files", "jobs")
    }
    totals = {key: sum(r[key] for r in per_round) for key in ("plain_s", "rules_s", "fire_s")}
    totals["jobs"] = sum(r["jobs"] for r in per_round)
    return {"medians": med, "totals": totals, "per_round": per_round}


def check(cat: Catalog) -> dict[str, int]:
    """Jobs against the files the rules should have matched; rule errors; triggers left."""
    project_id = cat.get("bench/rules").id
    qa_names = re.compile(QA_REGEX)
    with cat.db.session(readonly=True) as session:
        files = list(session.scalars(select(File).where(File.project_id == project_id)))
        jobs = session.scalar(select(func.count()).select_from(Job))
        errors = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "rule.error")
        )
        left = session.scalar(select(func.count()).select_from(RuleTrigger))
    expected = sum(
        f.type == "dicom" or (f.type == "nifti" and qa_names.search(f.name) is not None)
        for f in files
    )
    return {
        "jobs": jobs or 0,
        "expected_jobs": expected,
        "rule_errors": errors or 0,
        "triggers_left": left or 0,
    }


def report(results: dict[str, Any]) -> None:
    med, tot, chk = results["medians"], results["totals"], results["checks"]
    print(
        f"rules benchmark: {results['files']} files per project in {results['rounds']} rounds "
        f"({results['dialect']}); medians over rounds"
    )
    print(f"  upload without rules    {med['plain_ms_per_file']:8.3f} ms/file")
    print(f"  upload with 5 rules     {med['rules_ms_per_file']:8.3f} ms/file")
    print(
        f"  rule evaluation         {med['eval_ms_per_file']:8.3f} ms/file "
        f"(enqueue_rule_matches; {med['eval_plain_ms_per_file']:.3f} without rules)"
    )
    print(f"  firing triggers -> jobs {med['fire_ms_per_job']:8.3f} ms/job")
    print(
        f"  ratio upload rules/plain            {med['upload_ratio']:6.3f}  (goal <= {GOAL_RATIO})"
    )
    print(f"  ratio upload+all jobs queued/plain  {med['e2e_ratio']:6.3f}  (goal <= {GOAL_RATIO})")
    print(
        f"  same ratios in CPU time of this process: upload {med['upload_ratio_cpu']:.3f}, "
        f"upload+all jobs queued {med['e2e_ratio_cpu']:.3f}"
    )
    print(
        f"  totals: plain upload {tot['plain_s']:.2f} s, rules upload {tot['rules_s']:.2f} s, "
        f"firing {tot['fire_s']:.2f} s -> end to end {tot['rules_s'] + tot['fire_s']:.2f} s "
        f"for {tot['jobs']} jobs"
    )
    print(
        f"  checks: {chk['jobs']} jobs (expected {chk['expected_jobs']}), "
        f"{chk['rule_errors']} rule errors, {chk['triggers_left']} triggers left"
    )


if __name__ == "__main__":
    sys.exit(main())
