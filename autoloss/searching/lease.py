"""One driver per study, whatever the storage: a lease taken with the storage's own atomic primitive.

Only the driver asks, tells and re-queues interrupted trials; two drivers on one study would each re-queue the
other's running trials and double the budget. Optuna's study attributes cannot hold a lease: they are
last-writer-wins with no compare-and-set, so two drivers started together could both "hold" one. Instead:

- **journal file**: an OS record lock on a file beside the journal, one per study
  (``study.journal.<study>.lease``, see ``autoloss.searching.lock``). The kernel (NFS: its lock manager) drops it
  when the driver dies, however it dies.
- **database** (any SQLAlchemy URL: PostgreSQL, MySQL, SQLite): one row per study in the table
  ``autoloss_study_lease`` under its primary key, so only one INSERT can win. The row names the holder (host, pid,
  start, command) and carries an expiry in the database server's clock (no clock skew between machines); a
  heartbeat thread extends it every ``ttl / 4`` seconds. A lease whose heartbeat stopped is taken over after it
  expires by a compare-and-set UPDATE on the holder's random token (only one taker can match it). A holder on this
  same machine whose process is gone (same boot and pid namespace, pid absent or reused) is taken over at once.
  A driver that finds its token replaced (it was suspended or cut off past the expiry) has lost the lease:
  :meth:`DatabaseLease.check` raises, and the driver stops before writing anything more to the study.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from autoloss.errors import AutolossError
from autoloss.searching.lock import FileLock, describe_owner

LEASE_TABLE = "autoloss_study_lease"
DEFAULT_TTL_S = 60.0  # a driver whose machine died is taken over this long after its last heartbeat
TTL_ENV = "AUTOLOSS_LEASE_TTL"


def journal_path(storage_url: str | None, work_dir: str | Path) -> Path | None:
    """The journal file of a storage option (None: the work directory's ``study.journal``), or None for a
    database URL."""
    if storage_url is None:
        return Path(work_dir) / "study.journal"
    if storage_url.endswith((".journal", ".log")):
        return Path(storage_url)
    return None


def study_lease(storage_url: str | None, work_dir: str | Path, study_name: str, ttl: float | None = None):
    """The lease of ``study_name`` in that storage (not yet acquired: use it as a context manager)."""
    journal = journal_path(storage_url, work_dir)
    if journal is not None:
        return JournalLease(journal, study_name)
    return DatabaseLease(storage_url, study_name, ttl)


class JournalLease:
    """A journal study's lease: a file lock beside the journal. It cannot lapse while its process lives."""

    def __init__(self, journal: Path, study_name: str):
        self.study_name = study_name
        self.where = f"journal {journal}"
        self.takeover: str | None = None  # a line saying whose lease was taken over, when one was
        self._lock = FileLock(journal.with_name(f"{journal.name}.{_file_safe(study_name)}.lease"), self._busy)

    def acquire(self) -> "JournalLease":
        self._lock.acquire()
        if self._lock.stale:
            self.takeover = (f"took over study {self.study_name!r} ({self.where}) from {describe_owner(self._lock.stale)}"
                             " (that process is gone)")
        return self

    def check(self) -> None:
        """Raise when the lease was lost (a file lock is not lost while its process lives)."""

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> "JournalLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _busy(self, owner: dict) -> str:
        holder = describe_owner(owner) if owner else "another process"
        return (f"study {self.study_name!r} ({self.where}) is driven by {holder}; wait for it, stop it, or use "
                "another --study-name")


class DatabaseLease:
    """A database study's lease: a row under a unique key, kept alive by a heartbeat (see the module doc)."""

    def __init__(self, url: str, study_name: str, ttl: float | None = None):
        self.url, self.study_name = url, study_name
        self.ttl = float(ttl or os.environ.get(TTL_ENV) or DEFAULT_TTL_S)
        self.token = uuid.uuid4().hex
        self.where = _masked(url)
        self.takeover: str | None = None
        self.lost: dict | None = None  # the row that replaced ours, once the heartbeat finds the lease taken
        self._engine = None
        self._table = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- taking and giving back -------------------------------------------------------------------------------
    def acquire(self) -> "DatabaseLease":
        import sqlalchemy as sa

        if self._engine is None:
            self._connect()
        try:
            return self._take()
        except sa.exc.SQLAlchemyError as exc:  # the server went away, a lock timeout (SQLite), ...
            self._engine.dispose()
            raise AutolossError(storage_error(self.url, exc)) from None

    def _take(self) -> "DatabaseLease":
        import sqlalchemy as sa

        t = self._table
        for _ in range(10):  # each round either wins, refuses, or saw the row change hands and looks again
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa.insert(t).values(self._row(_server_now(conn))))
                return self._held()
            except sa.exc.IntegrityError:
                pass  # a row exists: someone holds, or held, the lease
            with self._engine.begin() as conn:
                now = _server_now(conn)
                row = conn.execute(sa.select(t).where(t.c.study_name == self.study_name)).mappings().first()
                if row is None:
                    continue  # released in between: insert again
                why = _vacated(row, now)
                if why is None:
                    self._engine.dispose()
                    raise AutolossError(self._busy_message(row, now))
                taken = conn.execute(sa.update(t).where(t.c.study_name == self.study_name, t.c.token == row["token"])
                                     .values(self._row(now))).rowcount
            if taken == 1:
                self.takeover = f"took over study {self.study_name!r} ({self.where}) from {describe_owner(row)} ({why})"
                return self._held()
        self._engine.dispose()
        raise AutolossError(f"could not take the lease of study {self.study_name!r} ({self.where}): it kept "
                            "changing hands; is another driver restarting in a loop?")

    def check(self) -> None:
        """Raise AutolossError when another driver took the lease over (this one must stop writing)."""
        if self.lost is not None:
            holder = describe_owner(self.lost) if self.lost else "another driver"
            raise AutolossError(f"lost the lease of study {self.study_name!r} ({self.where}) to {holder}: this "
                                f"driver's heartbeat lapsed for over {self.ttl:.0f} s; it stops without writing more")

    def release(self) -> None:
        if self._engine is None:
            return
        import sqlalchemy as sa

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        t = self._table
        try:
            with self._engine.begin() as conn:
                conn.execute(sa.delete(t).where(t.c.study_name == self.study_name, t.c.token == self.token))
        except sa.exc.SQLAlchemyError:
            pass  # the database is unreachable: the lease expires by itself
        self._engine.dispose()
        self._engine = None

    def __enter__(self) -> "DatabaseLease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # -- internals --------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        import sqlalchemy as sa
        from sqlalchemy.pool import NullPool

        try:
            self._engine = sa.create_engine(self.url, poolclass=NullPool)
            self._table = _lease_table(sa)
            _create_table(self._engine, self._table)
        except (ImportError, sa.exc.SQLAlchemyError, sa.exc.ArgumentError) as exc:
            raise AutolossError(storage_error(self.url, exc)) from None

    def _row(self, now: float) -> dict:
        return {"study_name": self.study_name, "token": self.token, "host": socket.gethostname(),
                "pid": os.getpid(), "machine": _machine_id(), "proc_start": _proc_start(os.getpid()),
                "started": time.time(), "heartbeat": now, "expires": now + self.ttl,
                "command": " ".join(sys.argv)[:500]}

    def _held(self) -> "DatabaseLease":
        self._thread = threading.Thread(target=self._beat, name=f"lease:{self.study_name}", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        import sqlalchemy as sa

        t = self._table
        while not self._stop.wait(self.ttl / 4):
            try:
                with self._engine.begin() as conn:
                    now = _server_now(conn)
                    mine = (t.c.study_name == self.study_name) & (t.c.token == self.token)
                    if conn.execute(sa.update(t).where(mine).values(heartbeat=now, expires=now + self.ttl)).rowcount:
                        continue
                    row = conn.execute(sa.select(t).where(t.c.study_name == self.study_name)).mappings().first()
                self.lost = dict(row) if row else {}
                return
            except sa.exc.SQLAlchemyError:
                continue  # the database is away for now: beat again; if it stays away the lease expires

    def _busy_message(self, row, now: float) -> str:
        return (f"study {self.study_name!r} ({self.where}) is driven by {describe_owner(row)} (last heartbeat "
                f"{max(0.0, now - row['heartbeat']):.0f} s ago; its lease expires in "
                f"{max(0.0, row['expires'] - now):.0f} s unless renewed); wait for it, stop it, or use another "
                "--study-name")


def _lease_table(sa):
    meta = sa.MetaData()
    return sa.Table(LEASE_TABLE, meta,
                    sa.Column("study_name", sa.String(512), primary_key=True),
                    sa.Column("token", sa.String(32), nullable=False),
                    sa.Column("host", sa.String(255)), sa.Column("pid", sa.Integer),
                    sa.Column("machine", sa.String(128)), sa.Column("proc_start", sa.BigInteger),
                    sa.Column("started", sa.Float), sa.Column("heartbeat", sa.Float, nullable=False),
                    sa.Column("expires", sa.Float, nullable=False), sa.Column("command", sa.String(500)))


def _create_table(engine, table) -> None:
    import sqlalchemy as sa

    try:
        table.metadata.create_all(engine, checkfirst=True)
    except (sa.exc.ProgrammingError, sa.exc.IntegrityError, sa.exc.OperationalError):
        # Two drivers creating the table at the same moment: one CREATE wins, the other fails; it exists now.
        table.metadata.create_all(engine, checkfirst=True)


def _server_now(conn) -> float:
    """The database server's clock in epoch seconds (one clock for every machine's driver)."""
    import sqlalchemy as sa

    query = {"postgresql": "SELECT extract(epoch FROM clock_timestamp())",
             "mysql": "SELECT UNIX_TIMESTAMP(NOW(6))", "mariadb": "SELECT UNIX_TIMESTAMP(NOW(6))",
             "sqlite": "SELECT (julianday('now') - 2440587.5) * 86400.0"}.get(conn.dialect.name)
    return float(conn.execute(sa.text(query)).scalar()) if query else time.time()


def _vacated(row, now: float) -> str | None:
    """Why the lease in ``row`` may be taken over now, or None while its holder is alive."""
    if now > row["expires"]:
        return f"its heartbeat stopped {now - row['heartbeat']:.0f} s ago and the lease expired"
    if row["machine"] and row["machine"] == _machine_id() and _proc_start(row["pid"]) != row["proc_start"]:
        return "that process is gone"
    return None


def _machine_id() -> str:
    """This kernel boot and pid namespace: where a pid names one process ('' where /proc does not tell)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _proc_start(pid: int | None) -> int | None:
    """A live process's start time (clock ticks since boot; None when there is no such live process)."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, TypeError, ValueError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])  # zombie/dead: gone; field 22 is the start time


def storage_error(url: str, exc: BaseException) -> str:
    """One line for a storage that cannot be opened (its password masked; the driver to install if missing)."""
    if isinstance(exc, ImportError):
        return (f"cannot open storage {_masked(url)}: its database driver {exc.name!r} is not installed "
                "(for PostgreSQL: pip install 'autoloss[postgres]')")
    text = str(exc).strip()
    return f"cannot open storage {_masked(url)}: {text.splitlines()[0] if text else type(exc).__name__}"


def _masked(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by the storage itself
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _file_safe(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return safe if len(safe) <= 120 else safe[:100] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
