"""A throwaway PostgreSQL server for tests: Debian's `postgresql` binaries, a temp cluster, a free loopback port.

PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres` user the Debian
package creates. The package is installed with apt-get when it is missing and we are root (CI's
fresh machines); elsewhere the tests that need it skip, saying how to install it.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be installed or started here; the message says why and what to do."""


def postgres_bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install_postgres() -> Path:
    """The directory of initdb/pg_ctl, installing Debian's package first when it is missing and we may."""
    bin_dir = postgres_bin_dir()
    if bin_dir is not None:
        return bin_dir
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("PostgreSQL is not installed; install it with `sudo apt-get install postgresql`.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-q", "postgresql"]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise PostgresUnavailable(f"apt-get install postgresql failed: {done.stderr[-500:]}")
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql.")
    return bin_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A running cluster; `url(database)` gives a SQLAlchemy URL, `create_database()` a fresh empty one."""

    def __init__(self, bin_dir: Path, root: Path, port: int, run_as: str | None):
        self.bin_dir, self.root, self.port, self.run_as = bin_dir, root, port, run_as
        self.data_dir = root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if check and done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")
        return done

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self.launch()

    def launch(self) -> PostgresServer:
        """Start the cluster's server (again, after stop(): the restart the outage tests do)."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.root / "server.log"),
                  "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", check=False)

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)


def start_postgres() -> PostgresServer:
    """Install (when needed and allowed) and start a throwaway cluster; the caller stops it."""
    bin_dir = install_postgres()
    run_as = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        run_as = "postgres"
        try:
            subprocess.run(["id", "postgres"], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            raise PostgresUnavailable("running as root, but there is no `postgres` user to own the cluster") from None
    root = Path(tempfile.mkdtemp(prefix="tuneloop-pg-"))
    if run_as:
        shutil.chown(root, user=run_as)
    return PostgresServer(bin_dir, root, free_port(), run_as).start()
