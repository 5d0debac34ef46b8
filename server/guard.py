"""What every request must show before its body is read: a bounded size, a caller, and (for writes) its origin.

Tornado reads a whole request body into memory before a handler runs, and Neuroglancer's server
allows bodies of up to 1 GiB, so an anonymous client could make the server hold that much before
any check. `GuardedHandler` streams the body instead (`stream_request_body`): `prepare` runs on
the headers alone, refuses a declared length over the route's cap (413), authenticates (401/403)
and checks the request's origin, and only then are body chunks accepted, up to the cap. Every
other route (Neuroglancer's token-addressed data routes, unknown paths) gets the small
connection-wide cap `DEFAULT_MAX_BODY_BYTES`, set on the HTTP server itself.

Cross-site request forgery: a browser sends the login cookie with any request to this host, from
any page, and `SameSite` does not tell ports of one host apart. So a write whose credential is
the cookie must come from a page of this server: its `Origin` (or, lacking one, `Referer`) must
name the host and port the request was sent to. A bearer token is never sent by a browser on
its own, so such requests need no origin. API writes with the cookie must also be
`application/json`, which a cross-site form or a plain `fetch` cannot send without a CORS
preflight, which this server never grants: a second wall should an origin check ever be wrong.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import tornado.httputil
import tornado.web

from server.auth import Caller
from volumes.errors import ConnectomeError, ForbiddenError, InputError, TooLargeError, UnsupportedMediaTypeError

KIB = 1024
MIB = 1024 * KIB
DEFAULT_MAX_BODY_BYTES = 64 * KIB  # routes without a body of their own (GETs, unknown paths)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def declared_length(request: tornado.httputil.HTTPServerRequest) -> int | None:
    """The Content-Length a request declares (None without one, e.g. a chunked body)."""
    text = request.headers.get("Content-Length")
    if text is None:
        return None
    text = text.split(",")[0].strip()  # tornado itself refuses unequal duplicates
    if not (text.isascii() and text.isdigit()):
        raise InputError("Content-Length must be a decimal number")
    return int(text)


def same_origin(request: tornado.httputil.HTTPServerRequest) -> bool:
    """Whether the request's Origin (or Referer) names the host and port it was sent to."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    # Behind a reverse proxy the Host header may be the proxy's upstream; X-Forwarded-Host then names
    # what the browser used. A cross-site page cannot set either header without a CORS preflight.
    hosts = {request.host.lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        hosts.add(forwarded.split(",")[0].strip().lower())
    return parts.netloc.lower() in hosts


def uses_cookie(request: tornado.httputil.HTTPServerRequest) -> bool:
    """True when the credential is the login cookie rather than an Authorization header."""
    return not request.headers.get("Authorization", "").startswith("Bearer ")


@tornado.web.stream_request_body
class GuardedHandler(tornado.web.RequestHandler):
    """A handler whose checks run on the headers, before any of the body is read.

    Subclasses set `max_body_bytes`, `required_role` (None: no login needed) and `json_writes`
    (cookie writes must be `application/json`), and read the body with `body_bytes()`.
    Handlers raise the `volumes.errors` class that says what went wrong; the answer's status is
    that class's `http_status` (tornado would answer 500 for any exception not its own).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    required_role: str | None = "viewer"
    json_writes: bool = False
    authenticator = None  # set by initialize(): an object with `async require(handler, role) -> Caller`

    _refusing_unread_body = False

    async def prepare(self) -> None:
        self._chunks: list[bytes] = []
        self._received = 0
        self.caller_: Caller | None = None
        self.request.connection.set_max_body_size(self.max_body_bytes)  # backstop for chunked bodies
        # Refused here, the body is never read and tornado closes the connection after the answer;
        # saying so in the answer keeps clients from sending their next request down a closing one.
        self._refusing_unread_body = self.request.headers.get("Content-Length", "0") != "0" or \
            "Transfer-Encoding" in self.request.headers
        length = declared_length(self.request)
        if length is not None and length > self.max_body_bytes:
            raise TooLargeError(f"the request body may be at most {self.max_body_bytes} bytes on this route, not {length}")
        if self.required_role is not None and self.request.method != "OPTIONS":  # a CORS preflight carries no credentials
            self.caller_ = await self.authenticator.require(self, self.required_role)
        if self.request.method not in SAFE_METHODS and uses_cookie(self.request):
            if not same_origin(self.request):
                raise ForbiddenError("cross-origin write refused: send it from this server's own pages, "
                                     "or authenticate with an Authorization: Bearer header")
            if self.json_writes and not _is_json(self.request.headers.get("Content-Type", "")):
                raise UnsupportedMediaTypeError("write requests with the login cookie must be sent as Content-Type: application/json")
        self._refusing_unread_body = False

    def log_exception(self, typ, value, tb) -> None:
        """A refusal is an answer to the client, not a server problem worth a log line."""
        if not isinstance(value, (ConnectomeError, tornado.web.HTTPError)):
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ConnectomeError):  # tornado set 500 for it; the error knows its own status
            status_code = exc.http_status
            self.set_status(status_code)
        self.write_error_body(status_code, str(exc) if isinstance(exc, ConnectomeError) else None)

    def write_error_body(self, status_code: int, message: str | None) -> None:
        """The body of an error answer; plain text here, JSON for the API."""
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code}: {message or self._reason}\n")

    def clear(self) -> None:
        super().clear()  # send_error starts the answer afresh; keep the close notice
        if self._refusing_unread_body:
            self.set_header("Connection", "close")

    def data_received(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self.max_body_bytes:  # tornado's own cap stops the read; this is belt and braces
            raise TooLargeError(f"the request body may be at most {self.max_body_bytes} bytes on this route")
        self._chunks.append(chunk)

    def body_bytes(self) -> bytes:
        """The whole body, read after `prepare` let it in."""
        return b"".join(getattr(self, "_chunks", ()))

    def on_finish(self) -> None:
        # The cap is per connection; give a kept-alive connection back the default for its next request.
        connection = self.request.connection
        if connection is not None and hasattr(connection, "set_max_body_size"):
            connection.set_max_body_size(DEFAULT_MAX_BODY_BYTES)


def _is_json(content_type: str) -> bool:
    return content_type.split(";")[0].strip().lower() == "application/json"
