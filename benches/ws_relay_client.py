#!/usr/bin/env python3
"""Sequential websocket round trips (one 200-byte text message at a time) to
URL for SECONDS; prints "p50_us p99_us msgs". The same measurement as the
peer harness's ws_check.py, with an SDK-shaped /connect query (api_key,
authorization, json) the gateway accepts. Needs python3-websockets."""
import asyncio
import json
import sys
import time
import urllib.parse

import websockets


async def main(url, token, seconds):
    q = urllib.parse.urlencode({
        "json": json.dumps({"user_id": "bench-user-1", "user_details": {"id": "bench-user-1"}}),
        "api_key": "bench-key", "authorization": token, "stream-auth-type": "jwt",
    })
    payload = '{"type":"health.check","connection_id":"bench"}' + " " * 150
    rtts = []
    async with websockets.connect(f"{url}?{q}", open_timeout=5, ping_interval=None) as ws:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            await ws.send(payload)
            got = await asyncio.wait_for(ws.recv(), 5)
            rtts.append((time.perf_counter() - t0) * 1e6)
            if got != payload:
                sys.exit("echo mismatch")
    rtts.sort()
    print(f"{rtts[len(rtts) // 2]:.0f} {rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]:.0f} {len(rtts)}")


asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
