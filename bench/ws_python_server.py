#!/usr/bin/env python3
"""ws_python_server.py — a WebSocket echo server on Python's `websockets` package, the
peer of cgnet's examples/ws_echo in `bench/run.sh ws`: every message comes back as it
came (str as text, bytes as binary), compression off, one asyncio loop on one thread.

    python3 bench/ws_python_server.py [--host H] [--port P]

Written for websockets 10.x (Debian's python3-websockets; the asyncio `serve` API, which
later versions keep as well). Port 0 (the default) lets the kernel pick one, named on the
first stdout line: "ws_python_server: listening on tcp://127.0.0.1:41234 (websockets
10.4)". Keepalive pings are off so a run measures echo only; the listen backlog is 1024, as
cgnet's default, so 1,000 conns opened at once are not dropped (asyncio's default is 100). SIGINT or SIGTERM stops it.
"""
import argparse
import asyncio
import signal
import sys

import websockets


async def echo(ws, path=None):
    # websockets 10.x passes the request path as a second argument (deprecated there);
    # later versions pass only the connection.
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass  # the client went away: nothing to echo to


async def main(host, port):
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with websockets.serve(echo, host, port, compression=None, max_size=64 << 20,
                                ping_interval=None, backlog=1024) as server:
        bound = server.sockets[0].getsockname()
        print(f"ws_python_server: listening on tcp://{bound[0]}:{bound[1]} "
              f"(websockets {websockets.__version__})", flush=True)
        await stop


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, choices=range(0, 65536), metavar="PORT")
    a = ap.parse_args()
    asyncio.run(main(a.host, a.port))
    sys.exit(0)
