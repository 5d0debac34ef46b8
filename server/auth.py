"""Who is calling: a user token from the `Authorization: Bearer` header or the login cookie, and their role.

The login link `/login?token=T` stores T in an HttpOnly, SameSite=Strict cookie and redirects to
the user's viewer, so the secret token never appears in a viewer URL or the browser history
after the first request. Roles rank viewer < proofreader < admin: viewers read, proofreaders
edit, admins also manage users.
"""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass

import tornado.web

from db import store
from volumes.errors import ConnectomeError, ForbiddenError, UnauthorizedError

TOKEN_COOKIE = "connectome_token"
TOKEN_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Caller:
    """An authenticated user: plain values, safe to pass between threads."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return store.Role(self.role).allows(role)

    def require(self, role: str) -> None:
        """ForbiddenError (HTTP 403) unless this caller's role allows `role`."""
        if not self.may(role):
            raise ForbiddenError(f"this needs the {role} role; {self.name} is a {self.role}")


def request_token(handler: tornado.web.RequestHandler) -> str | None:
    header = handler.request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer "):].strip() or None
    return handler.get_cookie(TOKEN_COOKIE) or None


class Authenticator:
    """Token → Caller lookups against the store, cached briefly so every request is not a query."""

    def __init__(self, proofreading_store: store.Store, executor: Executor):
        self.store = proofreading_store
        self.executor = executor
        self._cache: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def cached_caller(self, token: str) -> Caller | None:
        """The caller for a token looked up in the last few seconds, without touching the store.

        The cache is keyed by the token's SHA-256, as the store is: no raw token is kept in memory,
        and a lookup compares digests, so its time says nothing about how much of a guess was right.
        """
        with self._lock:
            cached = self._cache.get(store.token_digest(token))
        return cached[0] if cached and cached[1] > time.monotonic() else None

    def caller_for_token(self, token: str) -> Caller | None:
        """Blocking lookup (runs on a worker thread); None for an unknown token."""
        now = time.monotonic()
        cached = self.cached_caller(token)
        if cached is not None:
            return cached
        try:
            user = store.user_for_token(self.store, token)
        except ConnectomeError:
            return None
        caller = Caller(name=user.name, role=user.role)
        with self._lock:
            self._cache[store.token_digest(token)] = (caller, now + TOKEN_CACHE_SECONDS)
        return caller

    def forget(self) -> None:
        """Drop every cached token (after a token is revoked, so it stops working at once here)."""
        with self._lock:
            self._cache.clear()

    async def authenticate(self, handler: tornado.web.RequestHandler) -> Caller | None:
        token = request_token(handler)
        if token is None:
            return None
        # a cached token is answered here; only a store lookup needs a worker thread
        return self.cached_caller(token) or await asyncio.get_running_loop().run_in_executor(
            self.executor, self.caller_for_token, token)

    async def require(self, handler: tornado.web.RequestHandler, role: str) -> Caller:
        """The caller, or HTTP 401 (no or unknown token) / 403 (role too low)."""
        caller = await self.authenticate(handler)
        if caller is None:
            raise UnauthorizedError("a valid user token is required (Authorization: Bearer <token>, or open your login link)")
        caller.require(role)
        return caller
