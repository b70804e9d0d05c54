from __future__ import annotations

from tests.store.conftest import etcd_server

__all__ = ["etcd_server"]
