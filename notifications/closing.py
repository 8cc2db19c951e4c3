"""Close frames that daphne does not send by itself: 1009 for an oversized frame, 1001 on shutdown.

Daphne's WebSocket layer is Autobahn, whose default ``failByDrop`` answers a
frame or message over daphne's limit (``--websocket-max-frame-size`` and
``--websocket-max-message-size``, 1 MiB each by default) by dropping the TCP
connection: the client sees 1006 and cannot tell why. With ``failByDrop`` off,
Autobahn sends the close frame it already prepares, 1009 with the reason
("received WebSocket frame size N exceeds payload limit of M octets").

On SIGTERM daphne cancels its applications and stops the reactor, which also
drops every socket (1006 again, which clients treat as a network fault and may
back off from). A "before shutdown" trigger first sends each open socket 1001
("going away") and waits, briefly, for the closing handshakes, so clients
reconnect at once to another server; it stops listening before that, so no new
handshake lands on a server that is going.

(Daphne's own trigger, which cancels the applications, can fail with a
KeyError when an HTTP connection's entry is already reaped; ours is a separate
trigger, so the close frames go out either way.)

Daphne gives each application ``functools.partial(server.handle_reply,
protocol)`` as its ``send`` (see ``backlog.py``); that is how both are reached.
Under another server (or the test communicator) these are no-ops.
"""
from __future__ import annotations

import functools
import logging
from typing import Any

logger = logging.getLogger(__name__)

CLOSE_GOING_AWAY = 1001
GOING_AWAY_REASON = "server shutting down; reconnect"
# Bounded: a client that never answers the close must not hold up the shutdown.
SHUTDOWN_CLOSE_SECONDS = 2.0

_servers: set[int] = set()


def prepare_socket(send: Any) -> None:
    """Called once per connection with the ASGI ``send`` the server gave it."""
    if not isinstance(send, functools.partial) or not send.args:
        return
    protocol, server = send.args[0], getattr(send.func, "__self__", None)
    if not hasattr(protocol, "failByDrop") or not type(server).__module__.startswith("daphne."):
        return
    protocol.failByDrop = False  # per protocol: Autobahn copied the factory's options at connect
    if id(server) not in _servers:
        _servers.add(id(server))
        from twisted.internet import reactor

        reactor.addSystemEventTrigger("before", "shutdown", close_all, server)


def close_all(server: Any) -> Any:
    """Send 1001 to every open socket of ``server``; a Deferred that fires once they are
    closed (or after ``SHUTDOWN_CLOSE_SECONDS``), which holds the reactor's shutdown."""
    from twisted.internet import defer, reactor

    # Stop accepting first, and only then say goodbye: a handshake that reaches a server already
    # draining is cut when the process exits (the client sees no HTTP answer at all), while a refused
    # connection makes a load balancer (or a client) go to another server at once. Twisted closes a
    # port on its next turn (until then the kernel still completes handshakes into its backlog).
    # (daphne keeps only the listen() Deferreds, whose result it drops: find its ports among the
    # reactor's readers, by the factory they serve.)
    from twisted.internet.tcp import Port

    factory = getattr(server, "http_factory", None)
    ports = [r for r in reactor.getReaders() if isinstance(r, Port) and factory is not None and r.factory is factory]
    stopped = [defer.maybeDeferred(port.stopListening) for port in ports]
    done = defer.DeferredList(stopped, consumeErrors=True)
    done.addCallback(lambda _: _going_away(server))
    return done


def _going_away(server: Any) -> Any:
    from twisted.internet import defer, reactor

    closing = []
    for protocol in list(server.connections):
        if getattr(protocol, "state", None) == getattr(protocol, "STATE_OPEN", object()):
            # sendCloseFrame, not sendClose: Autobahn's public call refuses the
            # protocol-level codes (1001), which only a server should send.
            protocol.sendCloseFrame(code=CLOSE_GOING_AWAY, reasonUtf8=GOING_AWAY_REASON.encode(), isReply=False)
            closing.append(protocol.is_closed)
    logger.info("Shutting down: closing %d WebSocket(s) with %d", len(closing), CLOSE_GOING_AWAY)
    if not closing:
        return None
    done = defer.DeferredList(closing, consumeErrors=True)
    done.addTimeout(SHUTDOWN_CLOSE_SECONDS, reactor)
    done.addErrback(lambda _failure: None)
    return done
