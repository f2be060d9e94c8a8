#!/usr/bin/env python3
"""Opens N websockets to the gateway's /connect (SDK-shaped query, a valid
session token), holds them idle until stdin closes or HOLD seconds pass, then
closes them. Prints "opened N" once all are open. Loopback only.
Needs the `websockets` package (Debian: python3-websockets)."""
import asyncio
import json
import sys
import urllib.parse

import websockets


async def main(url, token, n, hold):
    q = urllib.parse.urlencode({
        "json": json.dumps({"user_id": "bench-user-1", "user_details": {"id": "bench-user-1"}}),
        "api_key": sys.argv[5] if len(sys.argv) > 5 else "bench-key", "authorization": token, "stream-auth-type": "jwt",
        "X-Stream-Client": "ws-idle-bench",
    })
    socks = []
    sem = asyncio.Semaphore(20)  # gentle: the Python echo upstream has a small accept backlog

    async def one():
        async with sem:
            ws = await websockets.connect(f"{url}/connect?{q}", open_timeout=30, ping_interval=None,
                                          close_timeout=1, max_size=2**16)
            socks.append(ws)

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"opened {len(socks)}", flush=True)
    await asyncio.sleep(hold)
    await asyncio.gather(*(ws.close() for ws in socks), return_exceptions=True)


if __name__ == "__main__":
    url, token, n, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(url, token, n, hold))
