"""Running the Alembic migrations from code (``pushgate migrate``), no alembic.ini needed."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from alembic import command
from alembic.config import Config

from pushgate.store.errors import StoreUnavailable

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ConfigParser treats % as interpolation; a DSN may carry %-escapes.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def is_postgres_url(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


# pushgate's own options in a PostgreSQL URL's query string (the size of each process's
# connection pool); taken out before the URL reaches a driver.
POOL_OPTIONS = ("pool_min_size", "pool_max_size")


def split_pool_options(url: str) -> tuple[str, dict[str, int]]:
    """``(url without pushgate's pool options, {option: value})``."""
    parts = urllib.parse.urlsplit(url)
    if not any(name in parts.query for name in POOL_OPTIONS):
        return url, {}
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    options = {k: int(v) for k, v in pairs if k in POOL_OPTIONS}
    rest = urllib.parse.urlencode([(k, v) for k, v in pairs if k not in POOL_OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), options


def sqlalchemy_url(url: str) -> str:
    """The URL Alembic connects with: SQLAlchemy needs a sync driver, so ``postgresql://`` and
    ``postgres://`` (used as they are by the asyncpg store) become ``postgresql+psycopg://``
    (psycopg 3). Other URLs pass unchanged."""
    if is_postgres_url(url):
        return "postgresql+psycopg://" + split_pool_options(url)[0].split("://", 1)[1]
    return url


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a SQLite file so a fresh checkout can migrate at once; a folder
    that cannot be created or written is ``StoreUnavailable``, saying which and why."""
    path = sqlite_path(url)
    if path and path != ":memory:":
        problem = sqlite_location_problem(path, migrating=True)
        if problem is not None:
            raise StoreUnavailable(problem)


ELSEWHERE = "point PUSHGATE_DATABASE_URL elsewhere"
# Files SQLite (WAL mode) and the store's writers keep beside the database.
SIDE_FILES = ("-wal", "-shm", "-writelock", "-writeturn")


def sqlite_location_problem(path: str, migrating: bool = False) -> str | None:
    """What stops pushgate from using the SQLite database at ``path``, in one line (what is
    wrong, where, what to do), or None. ``migrating`` creates a missing folder (as
    ``pushgate migrate`` does for a fresh checkout) and accepts a missing file."""
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                       None)
        if blocker is not None:
            return (f"{blocker} is a file, not a directory, so the database {target} cannot be "
                    f"there: {ELSEWHERE}")
        if not migrating:
            return (f"the database directory {folder} does not exist: run `pushgate migrate` "
                    f"(it creates it), or {ELSEWHERE}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return (f"cannot create the database directory {folder}: {exc.strerror}; create "
                    f"it by hand, or {ELSEWHERE}")
    # os.access asks the kernel: it answers for this user, and for a read-only mount.
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"the database directory {folder} is not writable by this user (SQLite keeps "
                f"its -wal and -shm files beside the database): make it writable, or {ELSEWHERE}")
    if target.is_dir():
        return f"the database {target} is a directory, not a file: {ELSEWHERE}"
    if not target.exists():
        return None if migrating else (
            f"the database file {target} does not exist: run `pushgate migrate` first, "
            f"or {ELSEWHERE}")
    for candidate in (target, *(Path(path + suffix) for suffix in SIDE_FILES)):
        if candidate.exists() and not os.access(candidate, os.R_OK | os.W_OK):
            return (f"the database file {candidate} is read-only for this user: make it "
                    f"writable (chmod/chown), or {ELSEWHERE}")
    return None


def sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite"):
        return None
    return url.split(":///", 1)[1] if ":///" in url else ":memory:"


def upgrade(url: str, revision: str = "head") -> None:
    ensure_sqlite_dir(url)
    command.upgrade(alembic_config(url), revision)


def current_revision(url: str) -> str | None:
    """The Alembic revision the database is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
