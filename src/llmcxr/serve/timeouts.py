"""A connection must send its request headers within a time limit (uvicorn has none of its own).

Without it, a client that sends a header line every few seconds holds a connection, a socket and a
parser forever, and a few hundred such clients exhaust the server (slowloris; issue 24). The body's
limit is ``api.RequestGuard``'s: the ASGI app only sees a request once its headers are complete.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


def timed_h11_protocol(header_timeout_s: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, closing a connection whose next request's headers are not complete
    ``header_timeout_s`` after it opened (or after its previous response)."""

    class TimedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            waiting_since = self.cycle  # the cycle a new request's headers will replace
            self._header_timer = self.loop.call_later(header_timeout_s, self._headers_late, waiting_since)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self, waiting_since) -> None:
            idle = self.cycle is None or self.cycle.response_complete  # no request being answered
            if self.cycle is waiting_since and idle and not self.transport.is_closing():
                self.transport.close()  # no new request's headers in time: drop the connection

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return TimedH11Protocol
