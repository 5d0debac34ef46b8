"""The one error type users see: a one-line message and an exit status, never a traceback."""


class ConnectomeError(Exception):
    """Bad input or a refused operation, explained in one line.

    `exit_code` is what the CLI exits with: 2 for bad input (the default),
    1 for a valid request the store refused (a conflict, say).
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputError(ConnectomeError):
    """The user's input is malformed or names something that does not exist."""


class RefusedError(ConnectomeError):
    """A well-formed request that cannot be carried out (conflict, invalid edit)."""

    exit_code = 1


def reason(exc: BaseException) -> str:
    """The first line of a library exception's message, for a one-line error (its class name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else f"{type(exc).__name__} without a message"
