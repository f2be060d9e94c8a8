#!/usr/bin/env python3
"""Writes the jwt target's seeds (fuzz/seeds/jwt/): tokens signed with the
fuzz target's HS256 secret and with tests/fixtures/keys/rsa.key (through the
openssl command), header/claims pairs for the signing modes, and forgeries.
The first byte of each seed is the target's mode (0 token, 1 sign with the
secret, 2 sign with the public key as an HMAC secret). Run from fuzz/."""
import base64, hashlib, hmac, json, os, subprocess

NOW = 1_800_000_000
SECRET = b"fuzz-session-secret"
OUT = "seeds/jwt"
KEY = "../tests/fixtures/keys/rsa.key"
PUB = open("../tests/fixtures/keys/rsa.pub", "rb").read()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def enc(obj):
    return b64(obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode())


def hs(header, claims, key=SECRET):
    msg = f"{enc(header)}.{enc(claims)}"
    return f"{msg}.{b64(hmac.new(key, msg.encode(), hashlib.sha256).digest())}"


def rs(header, claims):
    msg = f"{enc(header)}.{enc(claims)}"
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", KEY], input=msg.encode(),
                         capture_output=True, check=True).stdout
    return f"{msg}.{b64(sig)}"


HS = {"alg": "HS256", "typ": "JWT"}
RS = {"alg": "RS256", "typ": "JWT"}
good = {"sub": "alice", "exp": NOW + 3600, "iat": NOW - 10}
strict = dict(good, iss="https://auth.example.com/", aud=["chat"], tenant="acme", jti="j-1")
seeds = {
    "hs_good": (0, hs(HS, good)),
    "hs_strict": (0, hs(HS, strict)),
    "hs_expired": (0, hs(HS, dict(good, exp=NOW - 1))),
    "hs_nbf_frac": (0, hs(HS, dict(good, nbf=NOW + 0.5, exp=NOW + 0.9))),
    "hs_bad_user": (0, hs(HS, dict(good, sub="al ice"))),
    "hs_wrong_secret": (0, hs(HS, good, b"another-secret")),
    "hs_alg_none": (0, f"{enc({'alg': 'none'})}.{enc(good)}."),
    "hs_alg_hs512": (0, hs({"alg": "HS512"}, good)),
    "rs_good": (0, rs(RS, good)),
    "rs_strict": (0, rs(RS, strict)),
    "rs_confusion": (0, hs(HS, good, PUB)),
    "rs_as_hs": (0, hs(RS, good, PUB)),
    "junk_parts": (0, "a.b.c.d"),
    "junk_pad": (0, hs(HS, good) + "=="),
    "sign_good": (1, json.dumps(HS) + "\n" + json.dumps(strict)),
    "sign_claims_only": (1, json.dumps(good)),
    "sign_kid": (1, '{"alg":"HS256","kid":"k1","crit":["x"]}\n' + json.dumps(good)),
    "sign_float_exp": (1, json.dumps(HS) + '\n{"sub":"a","exp":1.8e9,"iat":-1,"nbf":1e400}'),
    "sign_aud_list": (1, json.dumps(HS) + '\n{"sub":"a","exp":1900000000,"aud":[1,"chat"],"iss":"https://auth.example.com/","tenant":"acme"}'),
    "hs_service_scope": (0, hs(HS, dict(strict, scope="read chat:server"))),
    "hs_service_roles": (0, hs(HS, dict(strict, sub="ops-bot", roles=["ops"]))),
    "sign_service_scope": (1, json.dumps(HS) + "\n" + json.dumps(dict(strict, scope="chat:server"))),
    "sign_service_roles": (1, json.dumps(HS) + "\n" + json.dumps(dict(strict, sub="ops-bot", roles=["x", "ops"]))),
    "sign_service_wrong_sub": (1, json.dumps(HS) + "\n" + json.dumps(dict(strict, sub="alice", roles="ops"))),
    "confusion_rs": (2, json.dumps(RS) + "\n" + json.dumps(good)),
    "confusion_hs": (2, json.dumps(HS) + "\n" + json.dumps(good)),
}
os.makedirs(OUT, exist_ok=True)
for name, (mode, text) in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([mode]) + text.encode())
