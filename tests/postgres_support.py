"""A real PostgreSQL server for the tests that need a shared database, started once per session.

    from postgres_support import postgres  # noqa: F401  (registers the session fixture)

    def test_something(postgres):
        url = postgres.database("tuning")  # postgresql+psycopg2://postgres@127.0.0.1:<port>/tuning

The server comes from the Debian packages (/usr/lib/postgresql/<version>/bin, or NLPFORGE_POSTGRES_BIN),
runs as the `postgres` user when the tests run as root (PostgreSQL refuses root), keeps its data and
unix socket in a temporary folder, and is stopped at the end of the session. It trades durability for
speed (fsync off): it holds test data only. Tests skip, with the reason, where it cannot start.
"""
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from serving_support import free_port

SETTINGS = ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "shared_buffers=32MB",
            "max_connections=100", "listen_addresses=127.0.0.1"]


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: NLPFORGE_POSTGRES_BIN, else the newest Debian install."""
    if os.environ.get("NLPFORGE_POSTGRES_BIN"):
        return Path(os.environ["NLPFORGE_POSTGRES_BIN"])
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name)
                       if p.parent.parent.name.isdigit() else 0)
    return installed[-1].parent if installed else None


@dataclass
class PostgresServer:
    """A running server: where it listens, and how to make a database on it."""

    bin: Path
    folder: Path
    port: int
    user: str
    as_user: list[str]

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.folder)

    def database(self, name: str) -> str:
        """A new, empty database; its SQLAlchemy URL (the psycopg2 driver, as Optuna and MLflow take it)."""
        created = self.run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                           name)
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise RuntimeError(f"createdb {name} failed: {created.stderr}")
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{name}"


def start_postgres() -> PostgresServer:
    """initdb into a fresh folder and start the server on a free port; raises RuntimeError with the reason."""
    folder = postgres_bin()
    if folder is None or not (folder / "initdb").is_file():
        raise RuntimeError("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb; "
                           "`apt-get install postgresql` or set NLPFORGE_POSTGRES_BIN)")
    as_user, user = [], os.environ.get("USER") or "postgres"
    data = Path(tempfile.mkdtemp(prefix="nlpforge-postgres-"))
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        runuser = shutil.which("runuser")
        if runuser is None:
            raise RuntimeError("running as root without `runuser` to switch to the postgres user")
        try:
            shutil.chown(data, user="postgres", group="postgres")
        except (LookupError, PermissionError) as error:
            raise RuntimeError(f"cannot hand {data} to the postgres user: {error}") from None
        as_user, user = [runuser, "-u", "postgres", "--"], "postgres"
    server = PostgresServer(folder, data, free_port(), user, as_user)
    initialised = server.run(str(folder / "initdb"), "-D", str(data / "data"), "-U", user, "--auth=trust",
                             "--no-sync", "--encoding=UTF8", "--locale=C")
    if initialised.returncode != 0:
        raise RuntimeError(f"initdb failed: {initialised.stderr.strip()[-500:]}")
    options = " ".join(f"-c {s}" for s in [*SETTINGS, f"port={server.port}", f"unix_socket_directories={data}"])
    started = server.run(str(folder / "pg_ctl"), "-D", str(data / "data"), "-l", str(data / "server.log"),
                         "-o", options, "-w", "-t", "60", "start", timeout=90)
    if started.returncode != 0:
        log = (data / "server.log").read_text(errors="replace")[-500:] if (data / "server.log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-500:]} {log}")
    return server


def stop_postgres(server: PostgresServer) -> None:
    server.run(str(server.bin / "pg_ctl"), "-D", str(server.folder / "data"), "-m", "immediate", "-w", "stop")
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server for the session (see the module docstring); skips where it cannot start."""
    try:
        server = start_postgres()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"no PostgreSQL server for this test: {error}")
    yield server
    stop_postgres(server)
