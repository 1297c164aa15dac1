"""Who is signed in to the dashboard, the session's signing key, and CSRF tokens.

The session is Starlette's signed cookie (``SessionMiddleware``, itsdangerous), scoped to the
``/ui`` sub-application: HttpOnly, SameSite=Strict. It holds the SHA-256 of the project token
signed in with (checked again on every request through the API's token lookups, so a revoked
token or a deactivated project ends the session within ``PUSHGATE_LOOKUP_CACHE_SECONDS``), or,
for the operator, a digest of ``PUSHGATE_ADMIN_PASSWORD`` (a changed password ends it) and
the project chosen; and the CSRF token every form carries.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp

from pushgate.api.state import Gateway
from pushgate.config import Settings
from pushgate.store.migrate import sqlite_path

log = logging.getLogger(__name__)

DEV_SECRET_KEY = "pushgate-dev-key"
KEY_FILE = "pushgate-session-key"


def ui_sessions(app: ASGIApp, /, settings: Settings, **options: Any) -> ASGIApp:
    """Starlette's session middleware with the key of ``session_key``, read when the
    dashboard's middleware is built (its first request), so a gateway nobody opens the
    dashboard of writes no key file."""
    return SessionMiddleware(app, secret_key=session_key(settings), **options)


def key_file(settings: Settings) -> Path:
    """Where the generated session key is kept: beside the SQLite database, else in
    ``./data/`` (PostgreSQL: set ``PUSHGATE_SECRET_KEY``, the same on every node)."""
    path = sqlite_path(settings.database_url)
    if path and path != ":memory:":
        return Path(path).resolve().parent / KEY_FILE
    return Path("data") / KEY_FILE


def session_key(settings: Settings) -> str:
    """The key that signs session cookies: derived from ``PUSHGATE_SECRET_KEY`` when it is
    set, else a random key generated once and kept in ``key_file`` (mode 0600), so sessions
    survive a restart and every process on the host shares it. The public development key
    never signs sessions. Read once per process (the dashboard's first request)."""
    return _session_key(settings.secret_key, settings.database_url)


@functools.lru_cache(maxsize=8)
def _session_key(secret_key: str, database_url: str) -> str:
    if secret_key and secret_key != DEV_SECRET_KEY:
        return hmac.new(secret_key.encode(), b"pushgate-ui-session", hashlib.sha256).hexdigest()
    path = key_file(Settings(database_url=database_url))
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        # O_EXCL: of several processes starting at once, one writes and the others read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write(key)
    log.info("dashboard session key generated in %s (set PUSHGATE_SECRET_KEY to choose it)", path)
    return key


def password_mark(key: str, password: str) -> str:
    """What an operator's session keeps of ``PUSHGATE_ADMIN_PASSWORD``: changing the password
    ends every operator session."""
    return hmac.new(key.encode(), password.encode(), hashlib.sha256).hexdigest()[:32]


def password_ok(settings: Settings, given: str) -> bool:
    return bool(settings.admin_password) and hmac.compare_digest(
        settings.admin_password.encode(), given.encode())


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok(request: Request, given: object) -> bool:
    token = request.session.get("csrf")
    return (isinstance(token, str) and isinstance(given, str)
            and hmac.compare_digest(token.encode(), given.encode()))


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is signed in: a project's token, or the operator (who may have chosen a
    project)."""

    project_id: int | None
    token_id: int | None
    operator: bool


async def viewer_of(request: Request, gateway: Gateway) -> Viewer | None:
    """The signed-in viewer, or None (a session that no longer holds is cleared)."""
    session = request.session
    token_hash = session.get("token_hash")
    if isinstance(token_hash, str):
        info = await gateway.lookups.authenticate(token_hash)
        if info is None or info.revoked or not info.project_active:
            session.clear()
            return None
        return Viewer(info.project_id, info.token_id, operator=False)
    mark = session.get("operator")
    settings = gateway.settings
    if isinstance(mark, str) and settings.admin_password:
        expected = password_mark(session_key(settings), settings.admin_password)
        if not hmac.compare_digest(mark, expected):
            session.clear()
            return None
        project = session.get("project")
        return Viewer(project if isinstance(project, int) else None, None, operator=True)
    return None
