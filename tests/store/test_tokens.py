"""The token part of the store contract: against SQLite and a real etcd, as the rest."""

from __future__ import annotations

from collections.abc import Callable

from reconciler.store import Store
from reconciler.store.tokens import TokenRecord, token_hash


def record(token: str, user: str = "alice", expires: float = 2_000_000_000.0) -> TokenRecord:
    return TokenRecord(token_hash(token), user, expires, 1_700_000_000.0)


def test_token_hash_is_sha256_hex() -> None:
    h = token_hash("abc")
    assert h == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_put_get_renew_delete(store: Store) -> None:
    revision = store.revision()
    a = record("token-a")
    assert store.get_token(a.token_hash) is None
    store.put_token(a)
    assert store.get_token(a.token_hash) == a
    renewed = TokenRecord(a.token_hash, a.user, a.expires + 3600, a.created)
    store.put_token(renewed)
    assert store.get_token(a.token_hash) == renewed
    assert store.delete_token(a.token_hash) is True
    assert store.delete_token(a.token_hash) is False
    assert store.get_token(a.token_hash) is None
    assert store.revision() == revision  # tokens are not desired state


def test_tokens_are_shared_between_handles(open_handle: Callable[[], Store]) -> None:
    one, two = open_handle(), open_handle()
    one.put_token(record("shared"))
    assert two.get_token(token_hash("shared")) == record("shared")
    two.delete_token(token_hash("shared"))
    assert one.get_token(token_hash("shared")) is None


def test_delete_user_tokens_and_purge(store: Store) -> None:
    store.put_token(record("a1", "alice"))
    store.put_token(record("a2", "alice"))
    store.put_token(record("b1", "bob"))
    store.put_token(record("old", "bob", expires=1_000.0))
    assert store.delete_user_tokens("alice") == 2
    assert sorted(t.user for t in store.tokens()) == ["bob", "bob"]
    assert store.purge_expired_tokens(now=1_500_000_000.0) == 1
    assert [t.token_hash for t in store.tokens()] == [token_hash("b1")]


def test_only_hashes_are_stored(store: Store) -> None:
    store.put_token(record("the-secret-token-value"))
    assert all("the-secret-token-value" not in repr(t) for t in store.tokens())
