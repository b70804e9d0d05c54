"""The JSON bodies of etcd gateway requests (/v3/kv/txn), how values are laid out, and why a request failed.

Every key and value is base64 in etcd's JSON gateway; values are compact JSON here.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from reconciler.store.base import IndexEntry, Op, Provenance, Put, StoredObject

MAX_TXN_OPS = 100  # etcd's default --max-txn-ops is 128
MAX_TXN_BYTES = 900_000  # etcd's default --max-request-bytes is 1.5 MiB; base64 adds a third

T = TypeVar("T")
Kv = dict[str, Any]


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def put(key: str, value: Any, lease: int | None = None) -> Kv:
    request: Kv = {"key": b64(key), "value": b64(json.dumps(value, separators=(",", ":")))}
    if lease is not None:
        request["lease"] = lease
    return {"request_put": request}


def delete(key: str, prefix: bool = False) -> Kv:
    request = {"key": b64(key)}
    if prefix:
        request["range_end"] = b64(end(key))
    return {"request_delete_range": request}


def range_request(key: str) -> Kv:
    return {"request_range": {"key": b64(key)}}


def same_mod(key: str, revision: int) -> Kv:
    return {"key": b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": revision}


def absent(key: str) -> Kv:
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": 0}


def present(key: str) -> Kv:
    return {"key": b64(key), "result": "GREATER", "target": "CREATE", "create_revision": 0}


def chunks(items: Sequence[T], size: Callable[[T], int], max_ops: int = MAX_TXN_OPS - 1) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` that fit in one etcd transaction each."""
    chunk: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if chunk and (len(chunk) >= max_ops or total + n > MAX_TXN_BYTES):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += n
    if chunk:
        yield chunk


def op_size(op: Op) -> int:
    body = len(json.dumps(op.body)) if isinstance(op, Put) else 0
    return (body + 300) * 4 // 3


def audit_row(op: Op) -> list[Any]:
    p = op.provenance
    return [op.kind, op.name, "put" if isinstance(op, Put) else "delete", p.source, p.origin, p.when]


def object_value(op: Put) -> Kv:
    """The value of obj/KIND/NAME: kind, name, body, prov, fp (and rev once folded)."""
    return {"kind": op.kind, "name": op.name, "body": op.body, "prov": op.provenance.to_dict(), "fp": op.fingerprint}


def index_value(value: Kv) -> Kv:
    """The value of idx/KIND/NAME: an object's value without its body."""
    return {k: v for k, v in value.items() if k not in ("body", "op")}


def index_entry(value: Kv, revision: int) -> IndexEntry:
    prov = value["prov"]
    return IndexEntry(revision, prov["source"], prov["origin"], float(prov["when"]), value.get("fp", ""))


def stored(value: Kv, revision: int) -> StoredObject:
    return StoredObject(value["kind"], value["name"], value["body"], revision, Provenance.from_dict(value["prov"]))


def unstaged(value: Kv) -> Kv:
    return {k: v for k, v in value.items() if k != "op"}


def failure_cause(error: object) -> str:
    """The root cause of a requests error, without urllib3's pool and object reprs."""
    text = str(error)
    for words, cause in (
        ("refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service", "unknown host"),
    ):
        if words in text:
            return cause
    return text
