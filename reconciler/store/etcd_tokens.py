"""Token records in etcd: ``PREFIX/token/SHA256`` holds ``{token_hash, user, expires, created}``."""

from __future__ import annotations

import reconciler.store.etcd_requests as req
from reconciler.store.tokens import TokenRecord


class EtcdTokens(req.Gateway):
    """The TokenStore methods of EtcdStore."""

    def put_token(self, record: TokenRecord) -> None:
        self._txn([], [req.put(self._k("token", record.token_hash), record.to_dict())])

    def get_token(self, token_hash: str) -> TokenRecord | None:
        value, _ = self._get(self._k("token", token_hash))
        return None if value is None else TokenRecord.from_dict(value)

    def delete_token(self, token_hash: str) -> bool:
        r = self._call(self._client.delete, self._k("token", token_hash))
        return bool(r)

    def tokens(self) -> list[TokenRecord]:
        return [TokenRecord.from_dict(v) for v, _ in self._range_all(self._k("token/"))]
