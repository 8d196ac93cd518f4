"""A real PostgreSQL server for the tests, started and stopped by the `postgres` fixture (tests/conftest.py).

Where the server comes from, first that works:
1. ``AUTOLOSS_TEST_POSTGRES=postgresql://...``: a server you run (each test makes its own database there);
2. pgserver (PyPI, pinned in .ci/requirements.txt, so `bash .ci/setup` installs it): PostgreSQL 16's own binaries
   in a wheel. PostgreSQL refuses to run as root; as root (CI here runs as root) pgserver creates a system user
   ``pgserver`` (useradd), runs the server as that user and opens the folders above its binaries and its data
   folder to it (chmod o+rx);
3. Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``), run as its ``postgres`` user when we are root
   (``AUTOLOSS_TEST_POSTGRES=debian`` picks it directly).

Either server listens on a unix socket only, in its data folder: nothing is reachable from outside the machine.
A server that cannot be had skips the tests that need it, except in CI (``CI=true``), where it fails them.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class Postgres:
    """A running server: ``database(name)`` creates a fresh database and returns its URL."""

    def __init__(self, url: str, origin: str):
        self.url, self.origin = url, origin

    def database(self, name: str) -> str:
        import sqlalchemy as sa

        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return sa.engine.make_url(self.url).set(database=name).render_as_string(hide_password=False)


@contextmanager
def running_postgres(root: Path) -> Iterator[Postgres]:
    choice = os.environ.get("AUTOLOSS_TEST_POSTGRES", "")
    if choice.startswith("postgresql"):
        yield Postgres(choice, "AUTOLOSS_TEST_POSTGRES")
        return
    errors = []
    if choice != "debian":
        try:
            with _pgserver(root) as server:
                yield server
            return
        except _Unavailable as exc:
            errors.append(f"pgserver: {exc}")
    try:
        with _debian(root) as server:
            yield server
        return
    except _Unavailable as exc:
        errors.append(f"Debian's postgresql: {exc}")
    raise _Unavailable("; ".join(errors))


class _Unavailable(RuntimeError):
    pass


@contextmanager
def _pgserver(root: Path) -> Iterator[Postgres]:
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (it falls back to /tmp)
            warnings.simplefilter("ignore")
            import pgserver
        # its own folder under /tmp: pgserver opens the folders above its data to its server user, and pytest's
        # tmp folders are kept private to root
        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="autoloss_pgserver_")) / "data",
                                     cleanup_mode="delete")
    except Exception as exc:  # noqa: BLE001 - import, useradd, initdb or start: any of them means "not here"
        raise _Unavailable(f"{type(exc).__name__}: {exc}") from None
    try:
        yield Postgres(server.get_uri(), "pgserver")
    finally:
        server.cleanup()


@contextmanager
def _debian(root: Path) -> Iterator[Postgres]:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise _Unavailable("not installed (apt-get install postgresql)")
    bindir = versions[-1].parent
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise _Unavailable("running as root and there is no 'postgres' user to run the server as") from None
    # A folder the server's user can reach (pytest's own tmp folders are private to root).
    data_root = Path(tempfile.mkdtemp(prefix="autoloss_pg_"))
    data = data_root / "data"
    data.mkdir()
    if user:
        for path in (data_root, data):
            os.chown(path, user.pw_uid, user.pw_gid)
    as_user = {"user": user.pw_uid, "group": user.pw_gid} if user else {}
    log = open(root / "postgres_debian.log", "w")
    proc = None
    try:
        subprocess.run([bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=utf8"],
                       check=True, stdout=log, stderr=subprocess.STDOUT, **as_user)
        proc = subprocess.Popen([bindir / "postgres", "-D", data, "-k", data, "-h", ""], stdout=log,
                                stderr=subprocess.STDOUT, **as_user)
        url = f"postgresql://postgres@/postgres?host={data}"
        _wait_ready(url, proc)
        yield Postgres(url, f"Debian {bindir}")
    except (OSError, subprocess.CalledProcessError) as exc:
        raise _Unavailable(f"{exc} (log: {root / 'postgres_debian.log'})") from None
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        shutil.rmtree(data_root, ignore_errors=True)


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    deadline = time.time() + timeout
    while True:
        try:
            with engine.connect():
                engine.dispose()
                return
        except sa.exc.OperationalError:
            if proc.poll() is not None or time.time() > deadline:
                raise _Unavailable("the server did not start") from None
            time.sleep(0.2)
