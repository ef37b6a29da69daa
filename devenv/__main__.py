"""``python -m devenv up`` runs the whole mesh with demo traffic; ``python -m devenv test [pytest args]``
runs the test suite. ``./dev`` prepares the venv and calls these."""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Sequence

USAGE = """usage: ./dev up                 run the whole mesh on this machine, with demo traffic
       ./dev test [pytest args]  run the whole test suite (args go to pytest)"""
WATCH_STEP_SECONDS = 0.5


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_up() -> int:
    from devenv.config import DevSettings
    from devenv.demo import banner, demo_files, play
    from devenv.mesh import Mesh, MeshError, dev_desk_secret, mesh_env
    from devenv.servers import ServerSet, SetupError, ensure_for_up, say

    settings = DevSettings.from_env()
    servers = ServerSet()
    mesh: Mesh | None = None
    reported: set[str] = set()

    def watch(seconds: float) -> bool:
        """Wait, telling the user once about each service that exits meanwhile."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert mesh is not None
            for name, code in mesh.exited().items():
                if name not in reported:
                    reported.add(name)
                    print(f"!! {name} exited with code {code}; see {mesh.log_path(name)}", flush=True)
            time.sleep(min(WATCH_STEP_SECONDS, max(0.0, deadline - time.monotonic())))
        return True

    # Explicit for SIGINT too: a shell that starts us in the background sets SIGINT to ignored,
    # and Python then installs no KeyboardInterrupt handler, so `kill -INT` would do nothing.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        say("checking servers (reused when running, started otherwise)")
        ensure_for_up(settings, servers)
        say("starting the services")
        # The demo runs on minutes-long SLA targets and a routing policy for people watching
        # (deploy/demo/sla.yaml, deploy/demo/routing.yaml) unless the variables say otherwise.
        mesh = Mesh(mesh_env(settings, TM_DESK_SECRET=dev_desk_secret(settings.var_dir),
                             **demo_files(settings, os.environ)),
                    settings.log_dir, quiet=False)
        mesh.start()
        print(banner(settings), flush=True)
        play(settings, wait=watch)
        while True:
            watch(3600)
    except KeyboardInterrupt:
        print("\n==> stopping (Ctrl-C): services, then what we started", flush=True)
        return 0
    except (SetupError, MeshError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # A second Ctrl-C must not leave half the mesh running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if mesh is not None:
            mesh.stop()
        servers.stop_all()


def run_test(args: Sequence[str]) -> int:
    from devenv.testrun import run_tests

    # Explicit for SIGINT too: a shell that starts us in the background sets SIGINT to ignored,
    # and Python then installs no KeyboardInterrupt handler, so `kill -INT` would do nothing.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    try:
        return run_tests(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("up", "test"):
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] == "up":
        if len(argv) > 1:
            print(USAGE, file=sys.stderr)
            return 2
        return run_up()
    return run_test(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
