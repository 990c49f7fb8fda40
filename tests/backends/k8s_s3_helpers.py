"""The stager image for S3-staging tests, built offline: the busybox test image plus the host's
curl and exactly the shared libraries ``ldd`` resolves for it (busybox's own wget cannot POST
binary data, so the stager contract is ``sh`` + ``tar`` + ``curl``)."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from tests.fixtures.engines import BUSYBOX_IMAGE, ContainerEngine

STAGER_IMAGE = "localhost/gearbroker/curl-stager:1"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _run(engine: ContainerEngine, *args: str, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        [engine.binary, *args], input=data, env=dict(engine.env), capture_output=True,
        timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"{engine.binary} {args[0]} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout


def build_stager_image(engine: ContainerEngine) -> str:
    """``STAGER_IMAGE`` in ``engine`` (built once; skips when the host has no curl)."""
    exists = subprocess.run(
        [engine.binary, "image", "exists", STAGER_IMAGE], env=dict(engine.env), check=False
    )
    if exists.returncode == 0:
        return STAGER_IMAGE
    curl = shutil.which("curl")
    if curl is None or shutil.which("ldd") is None:
        pytest.skip("the S3 stager test image needs curl and ldd on the host (apt install curl)")
    ldd = subprocess.run(["ldd", curl], capture_output=True, text=True, check=True).stdout
    libraries = sorted(set(re.findall(r"(/\S+)", ldd)))
    container = _run(engine, "create", BUSYBOX_IMAGE).decode().strip()
    try:
        exported = _run(engine, "export", container)
    finally:
        _run(engine, "rm", container)
    merged = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(exported)) as source,
        tarfile.open(fileobj=merged, mode="w") as target,
    ):
        for member in source:
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for path in ["/usr/bin/curl", *libraries]:
            real = os.path.realpath(path)
            info = target.gettarinfo(real, arcname=path.lstrip("/"))
            with open(real, "rb") as fh:
                target.addfile(info, fh)
    _run(
        engine, "import", "--quiet", "--change", f"ENV PATH={IMAGE_PATH}", "-", STAGER_IMAGE,
        data=merged.getvalue(),
    )  # fmt: skip
    return STAGER_IMAGE
