"""Running the receiver app under uvicorn with bounds a hostile client cannot stretch.

uvicorn's HTTP/1.1 server has a keep-alive timeout and a connection limit,
but no limit on the time a client may take to send its request headers: a
client that connects and sends nothing, or half a header line, holds its
connection for ever. :func:`guarded_h11` adds that limit to uvicorn's h11
protocol (a subclass, the documented ``http=`` hook of ``uvicorn.Config``).
The body has its own limits in the app (:class:`radseal.transport.receiver.Limits`).

:func:`configure_logging` makes every log record one line: a record carrying
an exception keeps its message and the exception's type, never the
traceback, and Python warnings (pydicom's, for one) are logged by category
only, because their text may quote values read from inside a sealed body.
"""

from __future__ import annotations

import logging
import re
import resource

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("radseal.receiver")

DEFAULT_HEADER_TIMEOUT = 10.0  # seconds from connection (or the previous response) to complete request headers
MAX_HEADER_BYTES = 16 * 1024  # h11's incomplete-event limit: longer header blocks get 400
DEFAULT_MAX_CONNECTIONS = 1024
_FD_MARGIN = 64  # files the receiver needs besides connections and uploads (index, store, libraries)


def guarded_h11(header_timeout: float = DEFAULT_HEADER_TIMEOUT) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for request headers.

    The deadline runs from the moment the connection is made and again from
    the end of each response (a kept-alive connection waiting for its next
    request); it stops when a request's headers are complete. Data arriving
    meanwhile does not reset it, so trickling a header byte by byte does not
    help. On expiry the connection is closed without an answer.
    """

    class GuardedH11Protocol(H11Protocol):
        _header_timer = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            cycle = self.cycle
            super().data_received(data)
            if self.cycle is not cycle:  # a request's headers are complete: the app's body limits take over
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            cycle = self.cycle
            super().on_response_complete()
            if self.cycle is not cycle:  # a pipelined request was already waiting
                self._cancel_header_timer()
            elif not self.transport.is_closing():
                self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timed_out)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timed_out(self) -> None:
            self._header_timer = None
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being served
            if not self.transport.is_closing():
                host = self.client[0] if self.client else "?"
                log.info("closed a connection from %s: no complete request headers within %g s", host, header_timeout)
                self.transport.close()

    GuardedH11Protocol.__qualname__ = GuardedH11Protocol.__name__ = "GuardedH11Protocol"
    return GuardedH11Protocol


def connection_limit(wanted: int, uploads: int) -> int:
    """Raise the open-file limit as far as allowed for ``wanted`` connections; the number of connections it allows.

    Each connection is a socket and each upload in flight a file; running out
    of descriptors makes the server fail to accept anyone, so the connection
    limit is kept below what the process may open.
    """
    need = wanted + uploads + _FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - uploads - _FD_MARGIN))


_WARNING = re.compile(r"(\w+(?:Warning|Error))\b")


class _OneLine(logging.Filter):
    """Every record one line; no traceback, no warning text (see the module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            text = str(record.msg)
            category = _WARNING.search(text)
            source = text.split(":", 1)[0].replace("\\", "/").rsplit("/site-packages/", 1)[-1]
            record.msg = "%s from %s (text not logged: it may quote values from an image)"
            record.args = (category.group(1) if category else "warning", source)
        if record.exc_info:
            exc = record.exc_info[1]
            message = record.getMessage().splitlines()[0] if record.getMessage() else ""
            record.msg = "%s (%s)" % (message, type(exc).__name__) if exc is not None else message
            record.args = None
            record.exc_info = None
            record.exc_text = None
        elif "\n" in str(record.msg):
            record.msg = " ".join(str(record.msg).split())
        record.stack_info = None
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """One line per event on stderr: time, logger, level, message."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_OneLine())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("pydicom").setLevel(logging.ERROR)  # its messages quote element values
