#!/usr/bin/env python3
"""Soak traffic for benches/soak.sh: mixed REST and websocket load on the
gateway for SECONDS, loopback only, then a JSON report on stdout.

REST workers keep one HTTP/1.1 connection each and pick, per request:
  70 % GET /app as one of USERS users                       -> 200 (or 429)
  10 % POST /channels/messaging/<id>/query                  -> 201/200 (or 429)
   5 % GET /app as the one "hot" user (hits its rate limit) -> 200 or 429
   5 % GET /channeltypes (server-side route)                -> 403 code 17
   5 % GET /app with an expired session                     -> 401 code 40
   5 % GET /app with an unknown api_key                     -> 401 code 2
Websocket workers loop: open /connect as a user, expect the health.check
(or a code-71 refusal over the per-user cap), hold 1-5 s, close.
Anything else (other statuses or codes, connection errors, timeouts) is an
unexpected error, reported by kind. Needs python3-websockets."""
import asyncio
import base64
import hashlib
import hmac
import json
import random
import sys
import time
import urllib.parse

import websockets

HOST, PORT = "127.0.0.1", int(sys.argv[1])
SECONDS = float(sys.argv[2])
SECRET = sys.argv[3].encode()
API_KEY = sys.argv[4]
USERS = int(sys.argv[5]) if len(sys.argv) > 5 else 2000
# Pause between a worker's requests (0: as fast as possible).
PAUSE = float(sys.argv[6]) / 1000 if len(sys.argv) > 6 else 0.0
REST_WORKERS, WS_WORKERS = 16, 40

counts = {}
errors = {}


def count(table, key):
    table[key] = table.get(key, 0) + 1


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(sub, exp_in=7200):
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    now = int(time.time())
    p = b64(json.dumps({"sub": sub, "iat": now - 5, "exp": now + exp_in}).encode())
    s = b64(hmac.new(SECRET, f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{s}"


TOKENS = [token(f"u{i}") for i in range(USERS)]
HOT = token("hot")
EXPIRED = token("late", exp_in=-60)


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(":")
        k = k.strip().lower()
        if k == "content-length":
            length = int(v.strip())
        elif k == "connection" and v.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length) if length else b""
    return status, body, close


def stream_code(body):
    try:
        return json.loads(body).get("code")
    except ValueError:
        return None


async def rest_worker(deadline):
    reader = writer = None
    while time.monotonic() < deadline:
        r = random.random()
        method, body = "GET", b""
        if r < 0.70:
            kind, path, tok = "get", f"/app?api_key={API_KEY}", random.choice(TOKENS)
        elif r < 0.80:
            kind, tok = "query", random.choice(TOKENS)
            path = f"/channels/messaging/c{random.randrange(50)}/query?api_key={API_KEY}"
            method, body = "POST", b'{"state":true,"watch":false}'
        elif r < 0.85:
            kind, path, tok = "hot", f"/app?api_key={API_KEY}", HOT
        elif r < 0.90:
            kind, path, tok = "server_route", f"/channeltypes?api_key={API_KEY}", random.choice(TOKENS)
        elif r < 0.95:
            kind, path, tok = "expired", f"/app?api_key={API_KEY}", EXPIRED
        else:
            kind, path, tok = "bad_key", "/app?api_key=nobody", random.choice(TOKENS)
        req = (f"{method} {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {tok}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 5)
            writer.write(req)
            status, resp, close = await asyncio.wait_for(read_response(reader), 10)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            count(errors, f"{kind}: {type(e).__name__}")
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.05)
            continue
        code = stream_code(resp) if status >= 400 else None
        count(counts, f"{kind} {status}" + (f" code {code}" if code is not None else ""))
        expected = {
            "get": {(200, None), (429, 9)},
            "query": {(200, None), (201, None), (429, 9)},
            "hot": {(200, None), (429, 9)},
            "server_route": {(403, 17)},
            "expired": {(401, 40)},
            "bad_key": {(401, 2)},
        }[kind]
        if (status, code) not in expected:
            count(errors, f"{kind}: unexpected {status} code {code}")
        if close:
            writer.close()
            reader = writer = None
        if PAUSE:
            await asyncio.sleep(PAUSE)


async def ws_worker(deadline):
    while time.monotonic() < deadline:
        i = random.randrange(USERS)
        user = f"u{i}"
        q = urllib.parse.urlencode({
            "json": json.dumps({"user_id": user, "user_details": {"id": user}}),
            "api_key": API_KEY, "authorization": TOKENS[i], "stream-auth-type": "jwt",
            "X-Stream-Client": "soak",
        })
        try:
            async with websockets.connect(f"ws://{HOST}:{PORT}/connect?{q}", open_timeout=10,
                                          close_timeout=2, ping_interval=None) as ws:
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if first.get("type") == "health.check":
                    count(counts, "ws health.check")
                    await asyncio.sleep(random.uniform(1, 5))
                else:
                    code = first.get("error", {}).get("code")
                    count(counts, f"ws refused code {code}")
                    if code != 71:
                        count(errors, f"ws: unexpected refusal code {code}")
        except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, ValueError) as e:
            count(errors, f"ws: {type(e).__name__}")
            await asyncio.sleep(0.1)


async def main():
    deadline = time.monotonic() + SECONDS
    await asyncio.gather(*(rest_worker(deadline) for _ in range(REST_WORKERS)),
                         *(ws_worker(deadline) for _ in range(WS_WORKERS)))
    print(json.dumps({"counts": dict(sorted(counts.items())), "errors": dict(sorted(errors.items())),
                      "requests": sum(counts.values()), "unexpected": sum(errors.values())}))


asyncio.run(main())
