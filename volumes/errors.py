"""Every error a user can see, on the ground floor: each class knows its CLI exit status and its HTTP status.

Code anywhere raises the class that says what went wrong (the store raises `NotFoundError` for an
unknown supervoxel, `ForbiddenError` for another user's edit); the CLI exits with `exit_code` and
the server answers `http_status`, both by attribute, so neither has to ask the store again what
kind of failure it was. The message is one line, shown as it is (CLI stderr, the API's JSON
`error`). Exit status 2 means bad input, 1 a well-formed request that was refused.

This module imports nothing of the project, so every package may import it.
"""
from __future__ import annotations


class ConnectomeError(Exception):
    """Bad input or a refused operation, explained in one line (base class: exit 2, HTTP 400)."""

    exit_code = 2
    http_status = 400

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(ConnectomeError):
    """The user's input is malformed or names something that does not exist."""


class NotFoundError(InputError):
    """The input names a supervoxel, root, edit, user or route that does not exist."""

    http_status = 404


class TooLargeError(InputError):
    """A request body over its route's cap."""

    http_status = 413


class UnsupportedMediaTypeError(InputError):
    """A write whose body is not of the type the route takes."""

    http_status = 415


class RefusedError(ConnectomeError):
    """A well-formed request that cannot be carried out (an invalid edit, say)."""

    exit_code = 1
    http_status = 409


class ConflictError(RefusedError):
    """The neurons an edit was made on changed since the editor saw them (reload and retry)."""


class UnauthorizedError(RefusedError):
    """No valid credential: an unknown, revoked or expired token."""

    http_status = 401


class ForbiddenError(RefusedError):
    """A known user whose role or ownership does not allow this (another user's edit, a viewer editing)."""

    http_status = 403


class UnavailableError(RefusedError):
    """The service cannot take the request now (shutting down); the same request may succeed later."""

    http_status = 503


def reason(exc: BaseException) -> str:
    """The first line of a library exception's message, for a one-line error (its class name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else f"{type(exc).__name__} without a message"
