"""Writes: every schema error at once, whole-state rules (clashes, references, min_servers),
nothing stored when refused, compare-and-swap, body size, no stack traces, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reconciler.api.app import create_app
from reconciler.api.candidate import Change, Desired, write
from reconciler.api.problems import ApiError
from reconciler.api.tls import ssl_context
from reconciler.api.view import StoreView
from reconciler.errors import ObreconcileError
from reconciler.store import Provenance, Put
from tests.api.conftest import Api
from tests.api.server import RunningServer, bodies, doc
from tests.api.world import LB_A


def refused(api: Api, method: str, path: str, body: Any, status: int, user: str = "root") -> dict[str, Any]:
    before = bodies(api.store)
    r = api.server.call(method, path, api.tokens[user], body)
    assert r.status_code == status, r.text
    assert bodies(api.store) == before
    answer: dict[str, Any] = r.json()
    return answer


def test_every_schema_error_is_reported(fresh_api: Api) -> None:
    body = {
        "name": "Bad Name",
        "owner": "team-a",
        "min_servers": 0,
        "nodes": [{"hostname": "a;b", "weight": 0}],
        "x": 1,
    }
    answer = refused(fresh_api, "POST", "/upstream/", body, 400)
    fields = {p["field"] for p in answer["detail"]}
    assert {"name", "min_servers", "nodes[0].hostname", "nodes[0].weight", "x"} <= fields
    assert all(p["message"] for p in answer["detail"])


def test_whole_state_rules(fresh_api: Api) -> None:
    # app-c joins lb-a, then takes app-a's server name: the access node is the victim (409)
    assert fresh_api.server.call("PUT", f"/node/{LB_A}/app-c", fresh_api.tokens["root"]).status_code == 200
    clash = {"owner": "team-a", "listen": {"server_names": ["app-a"]}}
    answer = refused(fresh_api, "PUT", "/upstream/app-c", clash, 409)
    assert "server name 'app-a'" in str(answer["detail"])
    assert answer["detail"][0]["kind"] == "AccessNode"
    # a dangling reference made by a delete: 409 and the reason
    answer = refused(fresh_api, "DELETE", "/group/team-b", None, 409)
    assert "unknown group 'team-b'" in str(answer["detail"])
    # min_servers above the backends not forced down
    drain = fresh_api.server.call(
        "PATCH", "/upstream/app-a/node/10.0.0.1:8080", fresh_api.tokens["owner"], {"force_status": "d"}
    )
    assert drain.status_code == 200 and drain.json()["force_status"] == "down"
    answer = refused(fresh_api, "PATCH", "/upstream/app-a/node/10.0.0.2:8080", {"force_status": "down"}, 400, "owner")
    assert "not forced down" in str(answer["detail"])


def test_a_stale_read_is_a_conflict(fresh_api: Api) -> None:
    store = fresh_api.store
    snapshot = store.snapshot()
    stale = Desired(snapshot.revision, snapshot, snapshot.desired_state())
    store.commit([Put("Group", "other", doc("Group", "other"), Provenance("api", "bob"))])
    body = dict(snapshot.objects[("Group", "team-b")].body)
    with pytest.raises(ApiError) as caught:
        asyncio.run(write(store, stale, [Change("Group", "team-b", body)], "alice"))
    assert caught.value.status == 409


def test_body_size_limit_and_non_json(fresh_api: Api) -> None:
    r = fresh_api.server.call("POST", "/group", fresh_api.tokens["root"], {"name": "x" * (2 << 20)})
    assert r.status_code == 413 and r.json()["error"]
    r = fresh_api.server.http.post(
        fresh_api.server.url + "/group", data=b"{not json", headers={"X-Auth-Token": fresh_api.tokens["root"]}
    )
    assert r.status_code == 400 and r.json()["detail"][0]["message"].startswith("not JSON: ")


class BrokenView(StoreView):
    def status(self) -> dict[str, Any]:
        raise RuntimeError("secret internal detail")


def test_no_stack_trace_in_a_500(fresh_api: Api) -> None:
    server = RunningServer(create_app(fresh_api.store, BrokenView(fresh_api.store)))
    try:
        token = server.login("ro", "roro-pw")
        r = server.call("GET", "/status", token)
        assert r.status_code == 500
        assert "secret" not in r.text and "Traceback" not in r.text and r.json()["error"]
    finally:
        server.stop()


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls(fresh_api: Api, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ObreconcileError, match="cannot read"):
        ssl_context(tmp_path / "missing.pem", key)
    server = RunningServer(create_app(fresh_api.store, StoreView(fresh_api.store)), ssl_context=context)
    try:
        r = requests.get(server.url.replace("http:", "https:") + "/openapi.json", verify=str(cert), timeout=10)
        assert r.status_code == 200
    finally:
        server.stop()


def test_concurrent_writes_never_lose_an_update(fresh_api: Api) -> None:
    """Parallel PATCHes of different backends: each is applied (200) or refused (409), never lost."""
    from concurrent.futures import ThreadPoolExecutor

    token = fresh_api.tokens["owner"]
    hosts = [f"10.0.0.{i}:8080" for i in range(3, 13)]
    for host in hosts:
        assert fresh_api.server.call("POST", "/upstream/app-a/node", token, {"hostname": host}).status_code == 201

    def patch(host: str) -> int:
        session = requests.Session()
        r = session.patch(
            f"{fresh_api.server.url}/upstream/app-a/node/{host}",
            json={"weight": 9},
            headers={"X-Auth-Token": token},
            timeout=30,
        )
        session.close()
        return r.status_code

    with ThreadPoolExecutor(10) as pool:
        codes = dict(zip(hosts, pool.map(patch, hosts), strict=True))
    assert set(codes.values()) <= {200, 409} and 200 in codes.values()
    stored = fresh_api.store.get("Upstream", "app-a")
    assert stored is not None
    weights = {n["hostname"]: n.get("weight", 1) for n in stored.body["nodes"]}
    assert {h for h, c in codes.items() if c == 200} == {h for h in hosts if weights[h] == 9}
