"""Running the Alembic migrations from code (``pushgate migrate``), no alembic.ini needed."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from alembic import command
from alembic.config import Config

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
    """Create the folder of a SQLite file so a fresh checkout can migrate at once."""
    path = sqlite_path(url)
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


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
