"""API tokens in the store, shared by every controller on one store.

Only the sha256 of a token is ever stored (``TokenRecord.token_hash``), with its user and its
expiry: a copy of the store gives nobody a usable token. The token itself (256 bits from
``secrets``) exists only in the client's hands and in the response that gave it.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def token_hash(token: str) -> str:
    """The sha256 (hex) of a token: what the store keeps and looks tokens up by."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """One issued token: its hash, the user it authenticates, when it expires."""

    token_hash: str
    user: str
    expires: float  # seconds since the epoch
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {"token_hash": self.token_hash, "user": self.user, "expires": self.expires, "created": self.created}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenRecord:
        return cls(str(data["token_hash"]), str(data["user"]), float(data["expires"]), float(data["created"]))


class TokenStore(ABC):
    """The token part of the store interface (SqliteStore and EtcdStore implement it)."""

    @abstractmethod
    def put_token(self, record: TokenRecord) -> None:
        """Create or replace (renew: same hash, later expiry) a token record."""

    @abstractmethod
    def get_token(self, token_hash: str) -> TokenRecord | None:
        """The record of ``token_hash`` (expired or not), or None."""

    @abstractmethod
    def delete_token(self, token_hash: str) -> bool:
        """Revoke one token; False when there was none of that hash."""

    @abstractmethod
    def tokens(self) -> list[TokenRecord]:
        """Every token record, expired ones included (until purged)."""

    def delete_user_tokens(self, user: str) -> int:
        """Revoke every token of ``user`` (a disabled or deleted user); how many there were."""
        return sum(self.delete_token(t.token_hash) for t in self.tokens() if t.user == user)

    def purge_expired_tokens(self, now: float | None = None) -> int:
        """Remove the records of expired tokens; how many."""
        now = time.time() if now is None else now
        return sum(self.delete_token(t.token_hash) for t in self.tokens() if t.expires <= now)
