"""``python -m tests.k8s_api --root DIR --kubeconfig FILE``: the test API server as a process.

Prints ``ready <url>`` once it listens, serves until SIGTERM or SIGINT, then stops its pods.
Podman is driven with ``$CONTAINERS_CONF`` (see scripts/services/podman.sh).
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from broker.runtimes.podman import PodmanRuntime
from tests.k8s_api.server import KubeTestServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="host folder of the PVC")
    parser.add_argument("--claim", default="gb-shared", help="the PVC's name")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="kubeconfig to write")
    parser.add_argument("--slots", type=int, default=4, help="pods run at once")
    args = parser.parse_args()
    conf = os.environ.get("CONTAINERS_CONF")
    runtime = PodmanRuntime(env={"CONTAINERS_CONF": conf} if conf else None)
    server = KubeTestServer(
        runtime, {args.claim: args.root}, args.root / ".server", slots=args.slots
    ).start()
    server.kubeconfig(args.kubeconfig)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"ready {server.url}", flush=True)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
