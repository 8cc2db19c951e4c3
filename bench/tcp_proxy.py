"""A small TCP proxy for the soak: round-robin over upstreams, and a switch that cuts every connection.

    python bench/tcp_proxy.py --listen 8000 --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002

``SIGUSR1`` closes every open connection at once (what a load balancer restart or a network blip does to
long-lived WebSockets); new connections are accepted as before. An upstream that refuses a connection is
skipped for that connection (the next one is tried), as a load balancer's health check would.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys


class Proxy:
    def __init__(self, upstreams: list[tuple[str, int]]) -> None:
        self.upstreams = upstreams
        self.turn = itertools.cycle(range(len(upstreams)))
        self.open: set[asyncio.StreamWriter] = set()
        self.cuts = 0

    async def connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: OSError | None = None
        # Each upstream once, from this connection's turn on: with the shared cycle alone, connects
        # running at the same time advance it for each other, and a connection could be offered the
        # same down upstream twice and be closed unanswered (the soak's 30-minute run lost 141
        # handshakes that way after its daphne restart).
        start = next(self.turn)
        for step in range(len(self.upstreams)):
            host, port = self.upstreams[(start + step) % len(self.upstreams)]
            try:
                return await asyncio.open_connection(host, port)
            except OSError as error:
                last = error
        raise last or OSError("no upstream")

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self.connect_upstream()
        except OSError:
            client_writer.close()
            return
        self.open.update((client_writer, up_writer))

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_reader, up_writer), pipe(up_reader, client_writer))
        self.open.difference_update((client_writer, up_writer))

    def cut(self) -> None:
        self.cuts += 1
        print(f"cutting {len(self.open) // 2} connections", flush=True)
        for writer in list(self.open):
            transport = writer.transport
            transport.abort()  # a reset, not a polite close: what a failing network does
        self.open.clear()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--upstream", action="append", required=True, help="host:port, repeatable")
    args = parser.parse_args()
    upstreams = [(u.rsplit(":", 1)[0], int(u.rsplit(":", 1)[1])) for u in args.upstream]
    proxy = Proxy(upstreams)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", args.listen, backlog=4096)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, proxy.cut)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"listening on {args.listen}", flush=True)
    async with server:
        await stop.wait()
    sys.exit(0)


if __name__ == "__main__":
    asyncio.run(main())
