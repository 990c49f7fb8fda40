"""Ingest benchmark: files/s and MB/s of ``gearbroker ingest dicom`` from a folder and from S3,
next to the machine's parse+hash limit and Orthanc's REST import of the same files.

Usage: ``python benchmarks/ingest.py [--files 20000] [--subjects 100] [--size 256]
[--workers 2] [--sources local,s3] [--modes pack,no-pack] [--orthanc] [--json out.json]``

- corpus: ``--files`` MR slices of ``--size``^2 16-bit pixels (~128 KB at 256) with realistic
  headers (:mod:`ingest.synthetic`), ``--subjects`` subjects, 4 series each;
- limit: ``dcmread(stop_before_pixels=True)`` + sha256 of every file in a process pool of
  ``--workers`` processes;
- durable-write limit: the same, plus writing each file to a new file beside the catalog's
  store and one ``syncfs`` per 200 files: what any ingest that keeps the bytes durably
  must at least do, so the ratio to it is the ingest's own overhead (the disk included in
  both);
- store ceiling: the durable-write limit without the parse (read, sha256, write, sync):
  the most any ingest that stores every file durably can do on this machine, parser or
  not.  Where it is below 0.8x the parse+hash limit, that goal cannot be met here;
- ingest: a fresh SQLite catalog and local blob store; the local Dask cluster of ``--workers``
  processes; end to end (cluster start included).  The driver's RSS is sampled as the files
  go by, to show it does not grow with their number;
- S3: the corpus uploaded to ``GEARBROKER_TEST_S3_ENDPOINT`` (or a moto server started here),
  with the server's plain GET rate for scale;
- Orthanc (Debian's ``orthanc``, installed by ``scripts/bench-deps.sh``, which runs here when
  it is missing): started on a free 127.0.0.1 port with its own storage, fed with
  ``POST /instances`` from ``--workers`` threads.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/catalog.py is named like the catalog package: keep this folder off the path.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

import argparse  # noqa: E402
import ctypes  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import boto3  # noqa: E402
import psutil  # noqa: E402
from pydicom import dcmread  # noqa: E402

from catalog.catalog import Catalog  # noqa: E402
from ingest.options import IngestOptions  # noqa: E402
from ingest.start import run_ingest, start_ingest  # noqa: E402
from ingest.synthetic import SeriesSpec, corpus_series, write_series  # noqa: E402

SERIES_PER_SUBJECT = 4


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    results: dict[str, Any] = {"files": args.files, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="gb-ingest-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus"
        paths, size = _make_corpus(corpus, args)
        results["bytes"] = size
        each = size / len(paths) / 1e3
        print(f"corpus: {len(paths):,} files, {size / 1e6:,.0f} MB ({each:.0f} KB each)")
        results["limit"] = _rate(len(paths), size, _parse_hash_limit(paths, args.workers))
        _show("parse+hash limit", results["limit"])
        results["write_limit"] = _rate(
            len(paths), size, _parse_hash_limit(paths, args.workers, work / "written")
        )
        _show("durable-write limit", results["write_limit"])
        results["store_ceiling"] = _rate(
            len(paths), size, _parse_hash_limit(paths, args.workers, work / "written", parse=False)
        )
        _show("store ceiling (no parse)", results["store_ceiling"])
        sources = [s.strip() for s in args.sources.split(",") if s.strip()]
        modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        if "local" in sources:
            for mode in modes:
                result = _ingest(work / f"local-{mode}", str(corpus), args, mode == "pack", {})
                results[f"ingest_local_{mode}"] = result
                _show(f"ingest local ({mode})", result)
            # The machine is shared and noisy: measure the limit again, compare with the mean.
            again = _rate(len(paths), size, _parse_hash_limit(paths, args.workers))
            _show("parse+hash limit (again)", again)
            results["limit_again"] = again
        if "s3" in sources:
            with _s3_endpoint(work) as endpoint:
                bucket = _upload(endpoint, corpus, args.workers)
                results["s3_get"] = _get_rate(endpoint, bucket, args.workers)
                print(f"  S3 server plain GETs: {results['s3_get']:,.0f} objects/s")
                for mode in modes:
                    url = f"s3://{bucket}/corpus"
                    result = _ingest(
                        work / f"s3-{mode}", url, args, mode == "pack", {"endpoint_url": endpoint}
                    )
                    results[f"ingest_s3_{mode}"] = result
                    _show(f"ingest s3 ({mode})", result)
                _delete_bucket(endpoint, bucket)
        if args.orthanc:
            results["orthanc"] = _rate(
                len(paths), size, _orthanc(work / "orthanc", paths, args.workers)
            )
            _show("Orthanc REST import", results["orthanc"])
    _verdict(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--subjects", type=int, default=100)
    parser.add_argument("--size", type=int, default=256, help="rows = columns of each slice")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--sources", default="local,s3")
    parser.add_argument("--modes", default="pack,no-pack")
    parser.add_argument("--orthanc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json")
    return parser


def _rate(files: int, size: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 2), "files_per_s": round(files / seconds, 1),
            "mb_per_s": round(size / 1e6 / seconds, 1)}  # fmt: skip


def _show(name: str, result: dict[str, Any]) -> None:
    extra = ""
    if "pipeline" in result:
        extra += f"  [without cluster start/stop: {result['pipeline']['files_per_s']:,.0f} files/s]"
    if "rss_mb" in result:
        rss = result["rss_mb"]
        extra += f"  driver RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB (10% -> 100% of files)"
    print(f"{name:28} {result['files_per_s']:>8,.0f} files/s {result['mb_per_s']:>7,.1f} MB/s "
          f"({result['seconds']:.1f} s){extra}")  # fmt: skip


# -- corpus -------------------------------------------------------------------------------


def _make_corpus(root: Path, args: argparse.Namespace) -> tuple[list[Path], int]:
    slices = max(1, args.files // (args.subjects * SERIES_PER_SUBJECT))
    specs = corpus_series(args.subjects, 1, SERIES_PER_SUBJECT, slices=slices, size=args.size)
    with ProcessPoolExecutor(args.workers) as pool:
        lists = list(pool.map(_write_one, [(spec, root) for spec in specs], chunksize=4))
    paths = sorted(p for chunk in lists for p in chunk)
    return paths, sum(p.stat().st_size for p in paths)


def _write_one(job: tuple[SeriesSpec, Path]) -> list[Path]:
    spec, root = job
    return write_series(spec, root / spec.patient_id / f"{spec.series_number:02d}")


# -- the limit --------------------------------------------------------------------------------


def _parse_hash(job: tuple[list[Path], Path | None, bool]) -> int:
    chunk, out, parse = job
    for index, path in enumerate(chunk):
        data = path.read_bytes()
        if parse:
            dcmread(io.BytesIO(data), stop_before_pixels=True)
        hashlib.sha256(data).hexdigest()
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            with (out / str(index)).open("wb") as fh:
                fh.write(data)
    if out is not None:
        fd = os.open(out, os.O_RDONLY)
        try:
            ctypes.CDLL(None, use_errno=True).syncfs(fd)
        finally:
            os.close(fd)
    return len(chunk)


def _parse_hash_limit(
    paths: list[Path], workers: int, out: Path | None = None, parse: bool = True
) -> float:
    """Seconds to parse and hash every file (and with ``out``, write each durably below
    it: one folder and one ``syncfs`` per chunk of 200; without ``parse``, only read, hash
    and write)."""
    chunks = [paths[i : i + 200] for i in range(0, len(paths), 200)]
    jobs = [(chunk, out / str(n) if out else None, parse) for n, chunk in enumerate(chunks)]
    started = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        assert sum(pool.map(_parse_hash, jobs)) == len(paths)
    seconds = time.perf_counter() - started
    if out is not None:
        shutil.rmtree(out)
    return seconds


# -- ingest -----------------------------------------------------------------------------------


def _ingest(
    work: Path, source: str, args: argparse.Namespace, pack: bool, extra: dict[str, Any]
) -> dict[str, Any]:
    cat = Catalog.initialize(f"sqlite:///{work / 'catalog.db'}", str(work / "blobs"), "bench")
    cat.create_group("bench")
    options = IngestOptions(kind="dicom", source=source, group="bench", project="p", pack=pack,
                            shard_files=200, **extra)  # fmt: skip
    me = psutil.Process()
    samples: list[tuple[int, float]] = []

    def sample(stats: dict[str, Any]) -> None:
        samples.append((int(stats.get("done", 0)), me.memory_info().rss / 1e6))

    started = time.perf_counter()
    run_id = start_ingest(cat, options)
    run = run_ingest(cat, run_id, store_url=str(work / "blobs"), workers=args.workers,
                     on_progress=sample)  # fmt: skip
    seconds = time.perf_counter() - started
    counts = run.stats.get("counts", {})
    files = sum(n for n, _b in counts.values())
    size = sum(b for _n, b in counts.values())
    cat.close()
    result: dict[str, Any] = _rate(files, size, seconds)
    timings = run.stats.get("timings", {})
    pipeline = sum(timings.values())
    result.update(counts=counts, timings=timings, pipeline=_rate(files, size, pipeline))
    done = [s for s in samples if s[0] > 0]
    if done:
        first = next((s for s in done if s[0] >= files // 10), done[0])
        result["rss_mb"] = [round(first[1], 1), round(max(s[1] for s in done), 1)]
    shutil.rmtree(work, ignore_errors=True)
    return result


# -- S3 ---------------------------------------------------------------------------------------


class _s3_endpoint:
    """The shared test S3 endpoint, or a moto server started for the benchmark."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
            os.environ.setdefault(key, value)
        shared = os.environ.get("GEARBROKER_TEST_S3_ENDPOINT")
        if shared:
            return shared
        port = _free_port()
        code = ("import logging, sys\nlogging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
                "from moto.server import main\nmain(sys.argv[1:])\n")  # fmt: skip
        argv = [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(port)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        endpoint = f"http://127.0.0.1:{port}"
        _wait_http(endpoint + "/", 30)
        return endpoint

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)


def _upload(endpoint: str, corpus: Path, workers: int) -> str:
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"gb-bench-{os.getpid()}-{int(time.time())}"
    client.create_bucket(Bucket=bucket)
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    started = time.perf_counter()
    with ThreadPoolExecutor(4 * workers) as pool:
        list(
            pool.map(
                lambda p: client.upload_file(
                    str(p), bucket, f"corpus/{p.relative_to(corpus).as_posix()}"
                ),
                files,
            )
        )
    print(f"  uploaded to S3 in {time.perf_counter() - started:.0f} s")
    return bucket


def _delete_bucket(endpoint: str, bucket: str) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def _get_rate(endpoint: str, bucket: str, workers: int) -> float:
    client = boto3.client("s3", endpoint_url=endpoint)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, MaxKeys=400)["Contents"]]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: client.get_object(Bucket=bucket, Key=k)["Body"].read(), keys))
    return len(keys) / (time.perf_counter() - started)


# -- Orthanc ----------------------------------------------------------------------------------


def _orthanc(work: Path, paths: list[Path], workers: int) -> float:
    binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
    if not Path(binary).exists() and os.geteuid() == 0:
        subprocess.run(["bash", str(Path(_HERE).parent / "scripts" / "bench-deps.sh")], check=True)
    if not Path(binary).exists():
        raise SystemExit(
            "Orthanc is not installed: run scripts/bench-deps.sh as root (or --no-orthanc)"
        )
    work.mkdir(parents=True)
    port = _free_port()
    config = {"Name": "gb-bench", "StorageDirectory": str(work / "storage"),
              "IndexDirectory": str(work / "index"), "HttpPort": port, "DicomServerEnabled": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
              "HttpThreadsCount": 2 * workers}  # fmt: skip
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen([binary, str(work / "orthanc.json")], stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/system", 60)
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(
                pool.map(
                    lambda c: _post_all(base, c), _chunks(paths, len(paths) // (4 * workers) + 1)
                )
            )
        seconds = time.perf_counter() - started
        with urllib.request.urlopen(base + "/statistics") as answer:
            stored = json.loads(answer.read())["CountInstances"]
        assert stored == len(paths), f"Orthanc stored {stored} of {len(paths)} instances"
        return seconds
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _post_all(base: str, paths: list[Path]) -> None:
    import http.client

    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    for path in paths:
        conn.request("POST", "/instances", body=path.read_bytes(),
                     headers={"Content-Type": "application/dicom"})  # fmt: skip
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"Orthanc refused {path}: HTTP {answer.status}")
    conn.close()


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- helpers ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def _verdict(results: dict[str, Any]) -> None:
    limit = results["limit"]["files_per_s"]
    if "limit_again" in results:
        limit = (limit + results["limit_again"]["files_per_s"]) / 2
    orthanc = results.get("orthanc", {}).get("files_per_s")
    written = results["write_limit"]["files_per_s"]
    ceiling = results["store_ceiling"]["files_per_s"]
    print("\ngoals: ingest >= 0.8x parse+hash limit, >= 2x Orthanc, flat driver RSS")
    line = f"  store ceiling (read, hash, write, sync; no parse): {ceiling / limit:.2f}x limit"
    if ceiling < 0.8 * limit:
        line += ": no ingest that keeps every file durably can reach 0.8x here"
    print(line)
    for key, value in results.items():
        if key.startswith("ingest_"):
            rate = value["files_per_s"]
            inner = value["pipeline"]["files_per_s"]
            line = f"  {key:22} {rate / limit:.2f}x limit ({inner / limit:.2f}x without startup)"
            line += f", {rate / written:.2f}x durable-write limit"
            if orthanc:
                line += f", {rate / orthanc:.1f}x Orthanc"
            print(line)


if __name__ == "__main__":
    sys.exit(main())
