"""Talking to etcd's JSON gateway: request bodies, value layout, and ``Gateway`` (the calls).

Every key and value is base64 in the gateway's JSON; our values are compact JSON. ``Gateway``
wraps etcd3gw: each call's errors become StoreErrors naming the store (a refused connection
says "connection refused", not urllib3's pool repr), and ranges are read in pages.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import requests
from etcd3gw import exceptions as etcd_errors
from etcd3gw.client import Etcd3Client

from reconciler.errors import StoreError, StoreUnavailableError
from reconciler.store.base import IndexEntry, Op, Provenance, Put, StoredObject

MAX_TXN_OPS = 100  # etcd's default --max-txn-ops is 128
PAGE = 2000  # keys per range request
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


class Gateway:
    """Calls to etcd through etcd3gw, with its errors turned into StoreErrors naming the store."""

    url: str
    _client: Etcd3Client
    _p: str  # the key prefix, ending in "/"

    def _k(self, *parts: str) -> str:
        return self._p + "/".join(parts)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call etcd3gw; its errors become StoreErrors that name the store."""
        try:
            return fn(*args, **kwargs)
        except (etcd_errors.ConnectionFailedError, etcd_errors.ConnectionTimeoutError) as e:
            raise StoreUnavailableError(
                f"{self.url}: etcd is not answering ({failure_cause(e.detail_text or e)})"
            ) from e
        except etcd_errors.Etcd3Exception as e:
            raise StoreError(f"{self.url}: etcd refused a request: {e.detail_text or e}") from e
        except requests.RequestException as e:
            raise StoreUnavailableError(f"{self.url}: etcd is not answering ({failure_cause(e)})") from e

    def _txn(self, compare: list[Kv], success: list[Kv]) -> Kv:
        txn = {"compare": compare, "success": success, "failure": []}
        return dict(self._call(self._client.transaction, txn))

    def _kvs(self, key: str, **options: Any) -> list[tuple[bytes, Kv]]:
        """etcd3gw's range with metadata: [(value, metadata with the key decoded)]."""
        client = self._client
        return self._call(lambda: [(v, dict(m)) for v, m in client.get(key, metadata=True, **options)])

    def _get(self, key: str, revision: int | None = None) -> tuple[Kv | None, Kv]:
        kvs = self._kvs(key, revision=revision)
        if not kvs:
            return None, {}
        return json.loads(kvs[0][0]), dict(kvs[0][1])

    def _range_all(self, prefix: str, revision: int | None = None, keys_only: bool = False) -> list[tuple[Kv, Kv]]:
        """Every (value, metadata) under ``prefix`` at ``revision``, read in pages, by key."""
        out: list[tuple[Kv, Kv]] = []
        start, stop = prefix, end(prefix)
        while True:
            page = self._kvs(
                start,
                range_end=stop,
                limit=PAGE,
                revision=revision,
                keys_only=keys_only,
            )
            out.extend(({} if keys_only else json.loads(v), m) for v, m in page)
            if len(page) < PAGE:
                return out
            start = page[-1][1]["key"].decode() + "\0"
