"""serve's master purges the records of expired tokens (a login leaves one each)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from reconciler.serve.controller import Controller, ServeSettings
from reconciler.serve.locks import MASTER_LOCK
from reconciler.store import open_store
from reconciler.store.tokens import TokenRecord, token_hash


def test_the_master_purges_expired_tokens_and_a_standby_does_not(tmp_path: Path) -> None:
    now = time.time()
    with open_store(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.put_token(TokenRecord(token_hash("old"), "alice", now - 60, now - 3600))
        store.put_token(TokenRecord(token_hash("live"), "alice", now + 3600, now))
        controller = Controller(store, ServeSettings("ctl-test:1"))
        assert asyncio.run(controller.purge_tokens()) == 0  # not the master
        assert len(store.tokens()) == 2
        controller.lease = store.acquire_lock(MASTER_LOCK, controller.host_name, ttl=30)
        controller.lease_deadline = time.monotonic() + 30
        assert asyncio.run(controller.purge_tokens()) == 1
        assert [t.token_hash for t in store.tokens()] == [token_hash("live")]
