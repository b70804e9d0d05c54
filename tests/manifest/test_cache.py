"""The manifest cache: unchanged files are not composed again, and nothing else changes."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler.errors import ManifestError
from reconciler.manifest import cache as cache_module
from reconciler.manifest import load
from reconciler.manifest.cache import ManifestCache
from reconciler.manifest.validate import load_desired_state

GROUPS = (
    "apiVersion: openbalancer/v1\nkind: Group\nname: ops\n---\napiVersion: openbalancer/v1\nkind: Group\nname: web\n"
)
UPSTREAMS = """apiVersion: openbalancer/v1
kind: Upstream
name: shop
owner: ops
nodes:
  - hostname: 10.0.0.1:8080
    weight: 2
  - {hostname: "10.0.0.2:8080", max_fails: 3}
acl:
  - group_name: web
    rule: READ
---

apiVersion: openbalancer/v1
kind: Upstream
name: api
owner: web
listen: {server_names: [api.example.com]}
nodes: [{hostname: "10.0.0.3:8080"}]
"""


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def _problems(paths: list[Path], cache: ManifestCache | None) -> list[str]:
    with pytest.raises(ManifestError) as raised:
        load_desired_state(paths, cache=cache)
    return [str(p) for p in raised.value.problems]


def _composed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files composed from now on."""
    names: list[str] = []
    real = load.load_bytes

    def spy(name: str, raw: bytes) -> tuple[list[load.Document], list[object]]:
        names.append(Path(name).name)
        return real(name, raw)  # type: ignore[return-value]

    monkeypatch.setattr(load, "load_bytes", spy)
    return names


def test_a_second_load_reads_the_cache_and_builds_the_same_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    cache = ManifestCache(tmp_path / "cache" / "obreconcile" / "manifests")
    fresh = load_desired_state([manifests])
    first = load_desired_state([manifests], cache=cache)
    composed = _composed(monkeypatch)
    second = load_desired_state([manifests], cache=ManifestCache(cache.directory))
    assert composed == []  # nothing composed: both files came from the cache
    assert first == fresh and second == fresh
    # the objects' sources (file and line) too, which compare=False leaves out of ==
    assert [u.source for u in second.upstreams.values()] == [u.source for u in fresh.upstreams.values()]
    assert [u.source.line for u in fresh.upstreams.values()] == [1, 14]
    for directory in (cache.directory, cache.directory.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_changed_file_is_composed_again_and_replaces_its_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    cache = ManifestCache(tmp_path / "cache")
    load_desired_state([manifests], cache=cache)
    entries = sorted(p.name for p in cache.directory.iterdir())
    assert len(entries) == 2
    (manifests / "upstreams.yaml").write_text(UPSTREAMS.replace("weight: 2", "weight: 3"))
    composed = _composed(monkeypatch)
    state = load_desired_state([manifests], cache=ManifestCache(cache.directory))
    assert composed == ["upstreams.yaml"]
    assert state.upstreams["shop"].nodes[0].weight == 3
    assert sorted(p.name for p in cache.directory.iterdir()) == entries  # one entry per file, replaced


def test_located_errors_are_the_same_with_and_without_the_cache(tmp_path: Path) -> None:
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    cache = ManifestCache(tmp_path / "cache")
    load_desired_state([manifests], cache=cache)  # both files cached
    # a cross-file problem in a cached file: the group its owner and ACL name is gone
    (manifests / "groups.yaml").write_text(GROUPS.split("---\n")[0])
    expected = _problems([manifests], None)
    assert any("upstreams.yaml:" in p and "web" in p for p in expected)
    assert _problems([manifests], ManifestCache(cache.directory)) == expected
    # a problem in a cached file itself, after its entry is written: the same with both
    (manifests / "groups.yaml").write_text(GROUPS)
    load_desired_state([manifests], cache=ManifestCache(cache.directory))
    (manifests / "extra.yaml").write_text(UPSTREAMS.split("---\n")[0])  # "shop" declared twice
    expected = _problems([manifests], None)
    assert _problems([manifests], ManifestCache(cache.directory)) == expected
    assert any("upstreams.yaml:3:" in p for p in expected)


def test_a_file_with_a_problem_is_never_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = UPSTREAMS.replace("weight: 2", "weight: heavy")
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": bad, "broken.yaml": "a: [\n"})
    cache = ManifestCache(tmp_path / "cache")
    _problems([manifests], cache)
    assert len(list(cache.directory.iterdir())) == 1  # groups.yaml only
    composed = _composed(monkeypatch)
    _problems([manifests], ManifestCache(cache.directory))
    assert sorted(composed) == ["broken.yaml", "upstreams.yaml"]


def test_an_unreadable_entry_or_another_code_version_is_a_miss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    cache = ManifestCache(tmp_path / "cache")
    load_desired_state([manifests], cache=cache)
    for entry in cache.directory.iterdir():
        entry.write_bytes(entry.read_bytes()[:20])  # cut short
    composed = _composed(monkeypatch)
    assert load_desired_state([manifests], cache=ManifestCache(cache.directory)) == load_desired_state([manifests])
    assert sorted(set(composed)) == ["groups.yaml", "upstreams.yaml"]
    composed.clear()
    monkeypatch.setattr(cache_module, "code_key", lambda: b"another build")
    load_desired_state([manifests], cache=ManifestCache(cache.directory))
    assert sorted(composed) == ["groups.yaml", "upstreams.yaml"]


def test_a_cache_that_cannot_be_written_is_no_cache(tmp_path: Path) -> None:
    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    (tmp_path / "file").write_text("not a directory")
    cache = ManifestCache(tmp_path / "file" / "obreconcile" / "manifests")
    assert load_desired_state([manifests], cache=cache) == load_desired_state([manifests])


def test_the_cli_uses_the_users_cache_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from reconciler.cli.main import cli

    manifests = _write(tmp_path / "m", {"groups.yaml": GROUPS, "upstreams.yaml": UPSTREAMS})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    for _ in range(2):
        result = CliRunner().invoke(cli, ["--output", "json", "validate", str(manifests)])
        assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "xdg" / "obreconcile" / "manifests").iterdir())) == 2
