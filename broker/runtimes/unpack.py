"""Unpack an OCI image from podman into a root-filesystem folder bubblewrap can run.

The folder is ``<cache_dir>/<image ID>``, so a retagged image gets a new folder and an
unchanged one is unpacked once.  Every step runs through the transport (the cache may live
on a cluster reached over SSH) and the folder appears atomically (rename of a temporary
sibling), so a crash or a concurrent unpack never leaves a half-written rootfs in place.
"""

from __future__ import annotations

import posixpath
import secrets

from broker.commands import CommandError
from broker.runtimes.podman import PodmanRuntime
from broker.transport import Transport
from catalog.errors import InvalidInputError


def unpack_image(
    image: str,
    cache_dir: str,
    transport: Transport,
    podman: PodmanRuntime,
) -> str:
    """The rootfs folder of ``image`` under ``cache_dir``, exporting it first if needed.

    Raises InvalidInputError when podman does not know the image, CommandError when a step
    fails (the temporary files are removed either way).
    """
    if not cache_dir.startswith("/"):
        raise InvalidInputError(f"the image cache folder must be absolute: {cache_dir!r}")
    found = transport.run(
        podman.cli("image", "inspect", "--format", "{{.Id}}", "--", image), check=False
    )
    image_id = found.stdout.strip().removeprefix("sha256:")
    if found.returncode != 0 or not image_id.isalnum():
        raise InvalidInputError(f"podman has no image {image!r}: {found.stderr.strip()}")
    target = posixpath.join(cache_dir, image_id)
    if transport.run(["test", "-d", target], check=False).returncode == 0:
        return target
    tag = secrets.token_hex(6)
    tmp_dir = posixpath.join(cache_dir, f".unpack-{image_id[:12]}-{tag}")
    tarball = tmp_dir + ".tar"
    container = f"gearbroker-unpack-{tag}"
    transport.run(["mkdir", "-p", "--", tmp_dir])
    try:
        transport.run(podman.cli("create", "--name", container, "--", image, "/unpack"))
        try:
            transport.run(podman.cli("export", "--output", tarball, container), timeout=1800)
        finally:
            transport.run(podman.cli("rm", "-f", container), check=False)
        transport.run(["tar", "-C", tmp_dir, "-xf", tarball], timeout=1800)
        try:
            transport.run(["mv", "-T", "--", tmp_dir, target])
        except CommandError:
            if transport.run(["test", "-d", target], check=False).returncode != 0:
                raise  # not a lost race with a concurrent unpack
    finally:
        transport.run(["rm", "-rf", "--", tmp_dir, tarball], check=False, timeout=600)
    return target
