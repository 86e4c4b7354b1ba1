"""A throwaway PostgreSQL server on a loopback port, for the distributed-search tests.

Uses the machine's PostgreSQL binaries (Debian's ``postgresql`` package: `make test`
installs it when it is missing and it can). As root, the server runs as the ``postgres``
user (PostgreSQL refuses root). Returns None, with the reason, when no server can start.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nasctl-pg-"))
        self.port = _free_port()
        self.url = f"postgresql://nasctl@127.0.0.1:{self.port}/postgres"
        self.pg_ctl = _bin("pg_ctl")
        self.prefix: list[str] = []

    def start(self) -> str | None:
        """Start the server; return None on success, else why it could not start."""
        initdb = _bin("initdb")
        if not (initdb and self.pg_ctl):
            return "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql"
        if os.geteuid() == 0:
            try:
                import pwd

                pw = pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run the server"
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        data = self.dir / "data"
        run = [*self.prefix, initdb, "-D", str(data), "-U", "nasctl", "--auth=trust", "-E", "UTF8"]
        r = subprocess.run(run, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return f"initdb failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=50"
        r = subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if r.returncode != 0:
            return f"pg_ctl start failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
        return None

    def stop(self) -> None:
        if self.pg_ctl and (self.dir / "data" / "postmaster.pid").exists():
            subprocess.run(
                [*self.prefix, self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.dir, ignore_errors=True)
