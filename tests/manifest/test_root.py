"""The manifests' root: found like git finds .git, so source files do not depend on the checkout."""

from __future__ import annotations

from pathlib import Path

from reconciler.manifest.root import manifests_root, relative_to_root
from reconciler.manifest.validate import load_desired_state

GROUP = "apiVersion: openbalancer/v1\nkind: Group\nname: ops\n"


def test_the_nearest_config_file_or_git_directory_is_the_root(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "manifests" / "team").mkdir(parents=True)
    assert manifests_root([repo / "manifests" / "team"]) == repo / "manifests" / "team"  # neither: the path
    (repo / ".git").mkdir()
    assert manifests_root([repo / "manifests" / "team"]) == repo
    (repo / "manifests" / "obreconcile.yaml").write_text("")
    assert manifests_root([repo / "manifests" / "team"]) == repo / "manifests"  # the nearest wins


def test_without_a_marker_the_root_holds_every_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.yaml").write_text(GROUP)
    assert manifests_root([tmp_path / "a", tmp_path / "b" / "x.yaml"]) == tmp_path
    assert relative_to_root("/elsewhere/x.yaml", tmp_path) == "/elsewhere/x.yaml"


def test_sources_are_relative_to_the_root_wherever_the_checkout_is(tmp_path: Path) -> None:
    for checkout in ("one", "two/deeper"):
        repo = tmp_path / checkout
        (repo / ".git").mkdir(parents=True)
        (repo / "groups").mkdir()
        (repo / "groups" / "ops.yaml").write_text(GROUP)
        state = load_desired_state([repo / "groups"])
        assert state.groups["ops"].source.file == "groups/ops.yaml"
