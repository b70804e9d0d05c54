"""Tokens, failed-login limits and the first administrator.

- A token is 256 bits from ``secrets`` (``token_urlsafe(32)``), handed out once; the store keeps
  only its sha256 with the user and the expiry (reconciler/store/tokens.py), so that several
  controllers on one etcd accept each other's tokens. A token is looked up by its hash and the
  hashes compared with ``hmac.compare_digest``.
- Failed logins are counted in this process (per controller), per user name and per client
  address, over a sliding window; past the limit a login is answered 429 before any password
  is checked. An unknown user costs a password check too (against a dummy hash) and gets the
  same answer as a wrong password.
- ``bootstrap_admin`` makes the first administrator (``serve --bootstrap-admin NAME``).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from reconciler.errors import ManifestError
from reconciler.manifest.model import API_VERSION, User
from reconciler.manifest.validate import validate_objects
from reconciler.passwords import hash_password, verify_password
from reconciler.store import Provenance, Put, Store
from reconciler.store.tokens import TokenRecord, token_hash

TOKEN_BYTES = 32  # 256 bits
MAX_TOKEN_LENGTH = 128
RECHECK = 0.0  # default seconds a token found valid is trusted before the store is asked again  # a longer X-Auth-Token header is refused without a store lookup
MAX_TRACKED = 100_000  # failed-login counters kept before old ones are swept
ADMIN_GROUP = "admins"
ADMIN_FLAGS = ["GLOBAL_RW", "MANAGEMENT", "SUPER"]


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins allowed per ``window`` seconds, per user name and per client address."""

    per_user: int = 5
    per_address: int = 20
    window: float = 300.0


class FailedLogins:
    """Sliding-window counters of failed logins, in this process."""

    def __init__(self, limits: LoginLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clock = clock
        self._by_user: dict[str, deque[float]] = {}
        self._by_address: dict[str, deque[float]] = {}

    def _recent(self, table: dict[str, deque[float]], key: str) -> deque[float]:
        times = table.get(key)
        if times is None:
            return deque()
        cutoff = self.clock() - self.limits.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del table[key]
        return times

    def retry_after(self, user: str, address: str) -> float:
        """Seconds until ``user`` from ``address`` may try again; 0 when it may now."""
        waits = []
        for table, key, limit in (
            (self._by_user, user, self.limits.per_user),
            (self._by_address, address, self.limits.per_address),
        ):
            times = self._recent(table, key)
            if len(times) >= limit:
                waits.append(times[len(times) - limit] + self.limits.window - self.clock())
        return max(waits, default=0.0)

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        if len(self._by_user) + len(self._by_address) > MAX_TRACKED:
            self._forget_old()
        self._by_user.setdefault(user, deque()).append(now)
        self._by_address.setdefault(address, deque()).append(now)

    def _forget_old(self) -> None:
        """Drop counters with no failure in the window (many user names or addresses tried)."""
        for table in (self._by_user, self._by_address):
            for key in list(table):
                self._recent(table, key)

    def succeeded(self, user: str) -> None:
        self._by_user.pop(user, None)


@cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def check_login(user: User | None, password: str) -> bool:
    """True for an enabled user and its password; an unknown user costs the same work."""
    if user is None:
        verify_password(_dummy_hash(), password)
        return False
    return verify_password(user.password_hash, password) and user.enabled


class Tokens:
    """Issue, look up, renew and revoke tokens in the store (blocking: run in a thread)."""

    def __init__(self, store: Store, lifetime: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.lifetime = lifetime
        self.clock = clock
        self.recheck = RECHECK
        self._recent: dict[str, tuple[float, TokenRecord]] = {}  # hash -> (checked at, record)

    def recent(self, token: str) -> TokenRecord | None:
        """A token found valid in the store less than RECHECK seconds ago (no store call)."""
        hit = self._recent.get(token_hash(token)) if len(token) <= MAX_TOKEN_LENGTH else None
        now = time.monotonic()
        if hit is None or now - hit[0] > self.recheck or hit[1].expires <= self.clock():
            return None
        return hit[1]

    def known(self, token: str) -> TokenRecord | None:
        """A token this process found valid before and that has not expired, however long ago.

        What a request is trusted with while the store does not answer: reads are served from
        the last desired state, writes fail anyway (docs/api.md, *When the store is down*).
        """
        hit = self._recent.get(token_hash(token)) if len(token) <= MAX_TOKEN_LENGTH else None
        if hit is None or hit[1].expires <= self.clock():
            return None
        return hit[1]

    def issue(self, user: str) -> tuple[str, TokenRecord]:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock()
        record = TokenRecord(token_hash(token), user, now + self.lifetime, now)
        self.store.put_token(record)
        return token, record

    def lookup(self, token: str) -> TokenRecord | None:
        """The record of a valid token; an expired one is removed and gives None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        wanted = token_hash(token)
        record = self.store.get_token(wanted)
        if record is None or not hmac.compare_digest(record.token_hash, wanted):
            return None
        if record.expires <= self.clock():
            self.store.delete_token(record.token_hash)
            return None
        if len(self._recent) > 10_000:
            self._recent.clear()
        self._recent[wanted] = (time.monotonic(), record)
        return record

    def renew(self, token: str) -> TokenRecord | None:
        record = self.lookup(token)
        if record is None:
            return None
        renewed = TokenRecord(record.token_hash, record.user, self.clock() + self.lifetime, record.created)
        self.store.put_token(renewed)
        return renewed

    def revoke(self, record: TokenRecord) -> None:
        self._recent.pop(record.token_hash, None)
        self.store.delete_token(record.token_hash)

    def forget(self, user: str) -> None:
        """Drop this process's recent lookups of ``user``'s tokens (disabled, deleted, re-passworded)."""
        for key in [k for k, (_, r) in self._recent.items() if r.user == user]:
            self._recent.pop(key, None)


def bootstrap_admin(store: Store, name: str, group: str = ADMIN_GROUP) -> str:
    """Create (or reset) user ``name`` in group ``group`` (SUPER, MANAGEMENT, GLOBAL_RW); its password.

    The password (144 random bits) is returned once to be printed; only its argon2id hash is
    stored. Run again, it resets the password: the way back in when every admin is locked out.
    The objects' provenance is ``api:bootstrap``, so a later ``plan`` of the manifests shows
    them until the manifests declare an administrator of their own.
    """
    password = secrets.token_urlsafe(18)
    who = Provenance("api", "bootstrap")
    snapshot = store.snapshot()
    ops: list[Put] = []
    existing_group = snapshot.objects.get(("Group", group))
    flags = set(existing_group.body.get("global_permissions", ())) if existing_group else set()
    if not set(ADMIN_FLAGS) <= flags:
        body = {
            "apiVersion": API_VERSION,
            "kind": "Group",
            "name": group,
            "global_permissions": sorted(flags | set(ADMIN_FLAGS)),
        }
        ops.append(Put("Group", group, body, who))
    existing_user = snapshot.objects.get(("User", name))
    user_body: dict[str, Any] = (
        dict(existing_user.body) if existing_user else {"apiVersion": API_VERSION, "kind": "User", "name": name}
    )
    groups = list(user_body.get("groups", []))
    user_body.update(
        password_hash=hash_password(password),
        groups=groups if group in groups else [*groups, group],
        enabled=True,
    )
    ops.append(Put("User", name, user_body, who))
    bodies = {key: obj.body for key, obj in snapshot.objects.items()}
    bodies.update({(op.kind, op.name): op.body for op in ops})
    problems = validate_objects(list(bodies.values()), file="bootstrap")
    if problems:
        raise ManifestError(problems)
    store.commit(ops, base_revision=snapshot.revision)
    store.delete_user_tokens(name)
    return password


def expiry_text(expires: float) -> str:
    """ISO 8601 UTC, to the second: how ``token_expiration`` is written."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
