"""The operator's nginx.conf, the pure parts and the reading: crossplane parse → settings, the
values the server names need, the refusal, the record the facts round trip checks."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from reconciler.deploy.layout import NodeLayout
from reconciler.deploy.operator import (
    RECORD,
    RECORD_PATHS,
    OperatorConfig,
    Setting,
    conf_from_command,
    conf_from_version,
    parse_file,
    parse_record,
    record_command,
    settle,
)
from reconciler.deploy.operator_read import read_operator
from reconciler.errors import NodeError
from reconciler.manifest.model import AccessNode, Connection, NginxSettings
from reconciler.render.renderer import DEFAULT_FILE, RenderedAccessNode, render
from reconciler.resolve import StaticResolver
from reconciler.transport.base import CommandResult
from tests.render.desired import access_node, state_of, upstream

RESOLVER = StaticResolver({}, default=["192.0.2.10"])
MAX, BUCKET = "server_names_hash_max_size", "server_names_hash_bucket_size"


def rendered_with(names: int, length: int = 0) -> RenderedAccessNode:
    """An access node whose upstreams have ``names`` server names (one of ``length`` characters)."""
    docs = [upstream(f"u{i}", "10.0.0.1", listen={"server_names": [f"u{i}.example.com"]}) for i in range(names)]
    if length:
        docs.append(upstream("long", "10.0.0.1", listen={"server_names": ["a" * (length - 4) + ".com"]}))
    listed = [d["name"] for d in docs]
    state = state_of([*docs, access_node("edge1", *listed)], validated=False)
    return render(state, resolver=RESOLVER)["edge1"]


def test_crossplane_finds_the_hash_directives_of_the_http_block_and_every_include() -> None:
    text = (
        "user www-data;\ninclude /etc/nginx/modules-enabled/*.conf;\nevents { worker_connections 768; }\n"
        "http {\n    # server_names_hash_max_size 1;\n    server_names_hash_bucket_size 128;\n"
        "    server_names_hash_max_size 16384;\n    include mime.types;\n"
        "    server { listen 80; server_names_hash_max_size 2; include snippets/ssl.conf; }\n"
        "    include /etc/nginx/openbalancer/http/*.conf;\n}\n"
    )
    parsed = parse_file("/etc/nginx/nginx.conf", text)
    assert parsed.settings == (
        Setting(BUCKET, "128", "/etc/nginx/nginx.conf", 6),
        Setting(MAX, "16384", "/etc/nginx/nginx.conf", 7),
    )
    assert parsed.includes == (
        ("/etc/nginx/modules-enabled/*.conf", ()),
        ("mime.types", ("http",)),
        ("snippets/ssl.conf", ("http", "server")),
        ("/etc/nginx/openbalancer/http/*.conf", ("http",)),
    )
    # a file included in http {} is read in that context
    included = parse_file("/etc/nginx/conf.d/hash.conf", "server_names_hash_max_size 4096;\n", ("http",))
    assert included.settings == (Setting(MAX, "4096", "/etc/nginx/conf.d/hash.conf", 1),)
    assert parse_file("/etc/nginx/conf.d/x.conf", "server_names_hash_max_size 4096;\n").settings == ()


def test_a_file_crossplane_cannot_parse_is_named_with_its_line() -> None:
    with pytest.raises(ValueError, match=r"^/etc/nginx/nginx.conf:3: unexpected \"}\""):
        parse_file("/etc/nginx/nginx.conf", "http {\n}\n}\n")


@pytest.mark.parametrize(
    ("command", "conf"),
    [
        ("nginx -t", None),
        ("/usr/sbin/nginx -p /srv/n -c /srv/n/nginx.conf -e /srv/n/e.log -t", "/srv/n/nginx.conf"),
        ("nginx -p /srv/n/ -c conf/nginx.conf -t", "/srv/n/conf/nginx.conf"),
        ("nginx -c/etc/alt.conf -t", "/etc/alt.conf"),
        ("nginx -t -c 'unbalanced", None),
        ("/usr/local/bin/check-config -c /etc/other.conf", None),  # not nginx's own: nginx -V says
        ("sudo -n /usr/sbin/nginx -q -t -c /etc/nginx/alt.conf", "/etc/nginx/alt.conf"),
    ],
)
def test_the_nginx_conf_the_test_command_names(command: str, conf: str | None) -> None:
    assert conf_from_command(command) == conf


def test_the_nginx_conf_nginx_was_built_with() -> None:
    debian = "nginx version: nginx/1.22.1\nconfigure arguments: --with-cc-opt=-O2 --conf-path=/etc/nginx/nginx.conf --x"
    assert conf_from_version(debian) == "/etc/nginx/nginx.conf"
    assert conf_from_version("configure arguments: --prefix=/usr/local/nginx --conf-path=conf/nginx.conf") == (
        "/usr/local/nginx/conf/nginx.conf"
    )
    assert conf_from_version("") == "/etc/nginx/nginx.conf"


def test_the_values_the_server_names_need() -> None:
    assert rendered_with(3).names_hash == {}
    assert rendered_with(3, length=48).names_hash == {BUCKET: 128}
    assert rendered_with(1000).names_hash == {BUCKET: 128, MAX: 1024}
    assert rendered_with(1000).server_names == (1000, len("u999.example.com"))
    many = rendered_with(10_000)
    assert many.names_hash == {BUCKET: 128, MAX: 16384}
    assert "server_names_hash_max_size 16384;" in many.files[DEFAULT_FILE]


def test_what_the_operator_sets_is_left_out_of_the_default_server() -> None:
    rendered = rendered_with(1000)
    both = OperatorConfig("/etc/nginx/nginx.conf", {MAX: Setting(MAX, "2048", "/etc/nginx/nginx.conf", 14)})
    settled = settle(rendered, both)
    assert "server_names_hash_max_size" not in settled.files[DEFAULT_FILE]
    assert "server_names_hash_bucket_size 128;" in settled.files[DEFAULT_FILE]
    assert settled.revision == rendered.revision and settled.names_hash == {BUCKET: 128}
    assert {p: t for p, t in settled.files.items() if p != DEFAULT_FILE} == {
        p: t for p, t in rendered.files.items() if p != DEFAULT_FILE
    }
    setting = {d: Setting(d, "16384", "/etc/nginx/nginx.conf", 3) for d in (MAX, BUCKET)}
    neither = settle(rendered, OperatorConfig("/etc/nginx/nginx.conf", setting)).files[DEFAULT_FILE]
    assert "server_names_hash" not in neither and rendered.revision in neither
    # what obreconcile does not render stays as it is, whatever the operator sets
    small = rendered_with(3)
    assert settle(small, OperatorConfig("/x", setting)) is small


def test_a_value_too_small_is_refused_with_the_value_needed() -> None:
    operator = OperatorConfig("/etc/nginx/nginx.conf", {MAX: Setting(MAX, "512", "/etc/nginx/nginx.conf", 14)})
    with pytest.raises(NodeError) as raised:
        settle(rendered_with(10_000), operator)
    assert str(raised.value) == (
        "edge1: plan: nginx.conf sets server_names_hash_max_size 512 (/etc/nginx/nginx.conf:14); "
        "10,000 server names need at least 16384: raise it or remove it"
    )
    bucket = OperatorConfig("/x", {BUCKET: Setting(BUCKET, "64", "/etc/nginx/conf.d/h.conf", 2)})
    with pytest.raises(NodeError, match=r"\(/etc/nginx/conf.d/h.conf:2\); a server name of 60 characters needs at"):
        settle(rendered_with(3, length=60), bucket)
    with pytest.raises(
        NodeError, match=r"sets server_names_hash_bucket_size 64 .*1,001 server names need at least 128"
    ):
        settle(rendered_with(1000, length=20), bucket)


def node_at(tmp_path: Path, conf: Path) -> AccessNode:
    nginx = NginxSettings(config_dir=str(tmp_path / "openbalancer"), test_command=f"nginx -c {conf} -t")
    return AccessNode("edge1", "ops", Connection("local"), nginx=nginx)


def operator_tree(tmp_path: Path) -> Path:
    """nginx.conf including a relative file, a glob, a nested include and the managed files."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "snippets").mkdir()
    (tmp_path / "openbalancer" / "http").mkdir(parents=True)
    (tmp_path / "openbalancer" / "http" / "_default.conf").write_text("server_names_hash_max_size 1;\n")
    (tmp_path / "mime.types").write_text("types { text/html html; }\n")
    (tmp_path / "conf.d" / "a.conf").write_text("include snippets/hash.conf;\n")
    (tmp_path / "conf.d" / "b.conf").write_text("server { listen 81; }\n")
    (tmp_path / "snippets" / "hash.conf").write_text("\n\nserver_names_hash_max_size 32768;\n")
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        "events {}\nhttp {\n    include mime.types;\n    include conf.d/*.conf;\n"
        f"    include {tmp_path}/openbalancer/http/*.conf;\n}}\n"
    )
    return conf


def test_reading_follows_the_includes_outside_the_managed_directory(tmp_path: Path) -> None:
    from reconciler.transport.local import LocalTransport

    conf = operator_tree(tmp_path)
    with LocalTransport("edge1") as transport:
        operator = read_operator(node_at(tmp_path, conf), transport)
    assert operator.settings == {MAX: Setting(MAX, "32768", str(tmp_path / "snippets" / "hash.conf"), 3)}
    files = ["nginx.conf", "mime.types", "conf.d/a.conf", "conf.d/b.conf", "snippets/hash.conf"]
    assert operator.files == {str(tmp_path / f): hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in files}
    assert operator.patterns == (
        str(conf),
        str(tmp_path / "mime.types"),
        str(tmp_path / "conf.d/*.conf"),
        str(tmp_path / "snippets/hash.conf"),
    )


def run_record_command(layout: NodeLayout) -> str:
    script = record_command(layout)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout


def test_the_record_is_valid_until_a_file_changes_appears_or_goes(tmp_path: Path) -> None:
    from reconciler.transport.local import LocalTransport

    conf = operator_tree(tmp_path)
    node = node_at(tmp_path, conf)
    layout = NodeLayout.of(node)
    assert run_record_command(layout) == ""  # no record: nothing printed
    with LocalTransport("edge1") as transport:
        operator = read_operator(node, transport)
    (tmp_path / "openbalancer" / ".obreconcile").mkdir()
    for path, content in operator.record().items():
        (tmp_path / "openbalancer" / path).write_bytes(content)
    assert {RECORD, RECORD_PATHS} == set(operator.record())
    assert parse_record(run_record_command(layout)) == operator
    (tmp_path / "openbalancer" / "http" / "x.conf").write_text("# the managed files do not count\n")
    assert parse_record(run_record_command(layout)) == operator
    (tmp_path / "conf.d" / "c.conf").write_text("\n")
    assert parse_record(run_record_command(layout)) is None  # a new file in a glob
    (tmp_path / "conf.d" / "c.conf").unlink()
    assert parse_record(run_record_command(layout)) == operator
    (tmp_path / "snippets" / "hash.conf").write_text("server_names_hash_max_size 512;\n")
    assert parse_record(run_record_command(layout)) is None  # a file changed
    (tmp_path / "snippets" / "hash.conf").unlink()
    assert parse_record(run_record_command(layout)) is None  # a file went away
    assert parse_record("not json\n") is None


def test_a_saved_plan_sees_the_recorded_operator_configuration_in_the_facts_digest() -> None:
    from reconciler.deploy.facts import Facts
    from reconciler.deploy.plan import facts_digest

    bare = Facts("edge1", "1.22.1", "/r", {}, None)
    recorded = OperatorConfig("/etc/nginx/nginx.conf", {}, {"/etc/nginx/nginx.conf": "a" * 64})
    edited = OperatorConfig("/etc/nginx/nginx.conf", {}, {"/etc/nginx/nginx.conf": "b" * 64})
    digests = {facts_digest(Facts(**{**bare.__dict__, "operator": o})) for o in (None, recorded, edited)}
    assert len(digests) == 3
    assert facts_digest(bare) == facts_digest(Facts(**{**bare.__dict__, "operator": None}))


def test_a_node_without_nginx_is_not_read_its_plan_refuses_it() -> None:
    from reconciler.deploy.facts import Facts
    from reconciler.deploy.operator_read import settled
    from reconciler.transport.local import LocalTransport

    class Untouchable(LocalTransport):
        def _execute(self, line: str, input: bytes | None, timeout: float | None) -> CommandResult:
            raise AssertionError(f"ran {line!r}")

    rendered = rendered_with(1000)
    node = AccessNode("edge1", "ops", Connection("local"))
    without_nginx = Facts("edge1", None, None, {}, None)
    assert settled(node, rendered, without_nginx, Untouchable("edge1")) == (rendered, None, False)
    recorded = OperatorConfig("/etc/nginx/nginx.conf", {MAX: Setting(MAX, "2048", "/etc/nginx/nginx.conf", 3)})
    with_record = Facts("edge1", "1.22.1", "/r", {}, None, operator=recorded)
    out, operator, read_now = settled(node, rendered, with_record, Untouchable("edge1"))  # the record: no read
    assert (operator, read_now) == (recorded, False) and "server_names_hash_max_size" not in out.files[DEFAULT_FILE]
