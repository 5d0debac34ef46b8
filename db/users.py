"""Users, their roles and their tokens. `Role` is the one place a role is ranked and checked."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.connection import as_utc, now, read_session, run_sql, write_session
from db.handle import Store
from db.models import User
from volumes.errors import ForbiddenError, InputError, NotFoundError, RefusedError, UnauthorizedError


class Role(StrEnum):
    """What a user may do; each role allows everything the roles below it do.

    viewer: read; proofreader: also edit (and undo/redo their own edits); admin: also manage users
    and undo/redo anyone's edits.
    """

    VIEWER = "viewer"
    PROOFREADER = "proofreader"
    ADMIN = "admin"

    @classmethod
    def parse(cls, text: object) -> "Role":
        """The role called `text`; InputError naming the choices otherwise."""
        try:
            return cls(text)
        except ValueError:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {text!r}") from None

    def allows(self, needed: "Role | str") -> bool:
        """Whether a user with this role may do what `needed` may."""
        order = list(Role)
        return order.index(self) >= order.index(Role(needed))


ROLES = tuple(role.value for role in reversed(Role))  # "admin", "proofreader", "viewer"
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


def token_digest(token: str) -> str:
    """The SHA-256 a token is stored and looked up by; the token itself is never stored."""
    return hashlib.sha256((token or "").encode()).hexdigest()


def add_user(store: Store, name: str, role: str, expires_at: datetime | None = None) -> str:
    """Create a user and return their new token (shown once; only its SHA-256 is stored)."""
    role = Role.parse(role)
    if not USER_NAME.match(name or ""):
        raise InputError(f"invalid user name {name!r}: use letters, digits, '_', '.', '@' or '-'")
    token = secrets.token_urlsafe(32)
    with write_session(store.engine, None) as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise RefusedError(f"user {name!r} already exists")
        session.add(User(name=name, role=role, token_sha256=token_digest(token), created_at=now(),
                         token_expires_at=expires_at))
    return token


def user_for_token(store: Store, token: str) -> User:
    """The active user a token belongs to; RefusedError for an unknown, expired or revoked token."""
    digest = token_digest(token)
    with read_session(store.engine) as session:
        user = session.scalar(select(User).where(User.token_sha256 == digest))
    # The row was found by its digest; comparing the digests again in constant time keeps any
    # index or collation quirk of the database from deciding on its own.
    if user is None or not hmac.compare_digest(user.token_sha256, digest) or user.revoked_at is not None:
        raise UnauthorizedError("unknown or revoked token")
    if user.token_expires_at is not None and as_utc(user.token_expires_at) <= now():
        raise UnauthorizedError(f"the token of {user.name!r} expired; an admin gives a new one with 'connectome user reset-token'")
    return user


def reset_token(store: Store, name: str, expires_at: datetime | None = None) -> str:
    """Give a user a new token (the old one stops working) and return it; also re-activates a removed user."""
    token = secrets.token_urlsafe(32)
    with write_session(store.engine, None) as session:
        user = user_row(session, name)
        user.token_sha256, user.token_expires_at, user.revoked_at = token_digest(token), expires_at, None
    return token


def remove_user(store: Store, name: str) -> None:
    """Revoke a user: their token stops working; their edits, annotations and name stay in the history."""
    with write_session(store.engine, None) as session:
        user = user_row(session, name)
        if user.revoked_at is not None:
            raise RefusedError(f"user {name!r} was already removed")
        # A fresh random digest as well, so the old token cannot match even if revoked_at were cleared.
        user.token_sha256, user.revoked_at = token_digest(secrets.token_urlsafe(32)), now()


def list_users(store: Store) -> list[User]:
    """Every user, active or removed, by name."""
    with read_session(store.engine) as session:
        return list(session.scalars(select(User).order_by(User.name)))


def get_user(store: Store, name: str) -> User:
    """The user called `name`; InputError if there is none."""
    with read_session(store.engine) as session:
        return user_row(session, name)


def user_row(session: Session, user: "str | User") -> User:
    name = user.name if isinstance(user, User) else user
    row = session.scalar(select(User).where(User.name == name))
    if row is None:
        raise NotFoundError(f"unknown user {name!r} (add one with 'connectome user add NAME --role proofreader')")
    return row


class EditorRow(NamedTuple):
    id: int
    name: str
    role: str


def editor_of(session: Session, user: "str | User") -> EditorRow:
    """The acting user (id, name, role), refused unless their role may change the store."""
    name = user.name if isinstance(user, User) else user
    rows = run_sql(session.connection(), "SELECT id, name, role FROM users WHERE name = ?", (name,))
    if not rows:
        raise NotFoundError(f"unknown user {name!r} (add one with 'connectome user add NAME --role proofreader')")
    editor = EditorRow(*rows[0])
    if not Role(editor.role).allows(Role.PROOFREADER):
        raise ForbiddenError(f"user {editor.name!r} has the {editor.role} role and cannot edit")
    return editor
