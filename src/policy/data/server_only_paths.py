#!/usr/bin/env python3
"""Derives server-only-paths.tsv from the shared Stream API reference.

For every row of stream-api/server-only-fields.tsv (a request schema and the
fields Stream's client-side spec removed from it) and every client operation
that uses the schema, this finds WHERE in that operation's JSON request body
(or in its `payload` query document, for GET operations) the schema sits, by
walking the server-side OpenAPI spec from the operation's request schema
($ref, object properties, array items, map values; depth 8), and writes one row
per (operation, location, JSON path, field).

Usage (from the repo root, with the shared reference beside the repo):
    python3 src/policy/data/server_only_paths.py ../shared/stream-api \
        > src/policy/data/server-only-paths.tsv
"""
import csv
import json
import os
import sys

ref_dir = sys.argv[1]
specs = []
# Server-side specs first; the client-side ones only for operations no
# server-side spec has (the schema's place in the body is the same; its
# server-only fields come from server-only-fields.tsv either way).
for name in ["spec/chat-openapi.json", "spec/moderation-openapi.json",
             "spec/v2/chat-serverside-api.json", "spec/chat-openapi-clientside.json",
             "spec/v2/chat-clientside-api.json"]:
    with open(os.path.join(ref_dir, name)) as f:
        specs.append(json.load(f))


def find_op(method, path):
    for spec in specs:
        item = spec.get("paths", {}).get(path)
        if item and method.lower() in item:
            return spec, item[method.lower()]
    return None, None


def ref_name(schema):
    r = schema.get("$ref", "")
    return r.rsplit("/", 1)[-1] if r else None


def walk(spec, schema, target, path, depth, seen, out):
    """Appends to `out` every JSON path (list of segments) where `target` sits."""
    if depth > 8 or schema is None:
        return
    name = ref_name(schema)
    if name:
        if name == target:
            out.append(list(path))
            return
        if (name, len(path)) in seen:
            return
        seen = seen | {(name, len(path))}
        schema = spec["components"]["schemas"].get(name)
        if schema is None:
            return
    for sub in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        walk(spec, sub, target, path, depth + 1, seen, out)
    if schema.get("type") == "array" and "items" in schema:
        walk(spec, schema["items"], target, path + ["[]"], depth + 1, seen, out)
    ap = schema.get("additionalProperties")
    if isinstance(ap, dict):
        walk(spec, ap, target, path + ["{}"], depth + 1, seen, out)
    for prop, sub in (schema.get("properties") or {}).items():
        walk(spec, sub, target, path + [prop], depth + 1, seen, out)


rows = set()
with open(os.path.join(ref_dir, "server-only-fields.tsv")) as f:
    for row in csv.DictReader(f, delimiter="\t"):
        target = row["schema"]
        fields = row["fields_absent_from_client_spec"].split(",")
        for op in row["client_ops"].split("; "):
            method, path = op.split(" ", 1)
            spec, operation = find_op(method, path)
            if operation is None:
                print(f"not found: {op}", file=sys.stderr)
                continue
            found = []
            body = (operation.get("requestBody") or {}).get("content", {}).get(
                "application/json", {}).get("schema")
            if body is not None:
                hits = []
                walk(spec, body, target, [], 0, frozenset(), hits)
                found += [("body", h) for h in hits]
            for param in operation.get("parameters", []):
                if param.get("name") == "payload" and param.get("in") == "query":
                    sch = param.get("schema") or (param.get("content", {}).get(
                        "application/json", {}).get("schema"))
                    hits = []
                    walk(spec, sch, target, [], 0, frozenset(), hits)
                    found += [("payload", h) for h in hits]
            if not found:
                print(f"schema {target} not found in {op}", file=sys.stderr)
            for where, jpath in found:
                for field in fields:
                    rows.add((method, path, where, ".".join(jpath), field))

print("method\tpath\tlocation\tjson_path\tfield")
for r in sorted(rows):
    print("\t".join(r))
