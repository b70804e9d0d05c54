"""The shared configuration file, ``obreconcile.yaml``, found the way git finds ``.git``.

From the current directory upwards, the nearest ``obreconcile.yaml`` (or the file named by
``OBRECONCILE_CONFIG``) gives the defaults that CI, a laptop and ``serve`` then share without
repeating flags::

    store: sqlite:///state/obreconcile.db     # or etcd://10.0.0.5:2379
    templates: templates/                     # plan, apply, render --templates: apply records them
    connection:                               # plan, apply, serve, converge
      known_hosts: ci/known_hosts
      forks: 20
      connect_timeout: 5
      accept_new_host_keys: false

Relative paths (an SQLite store's file, ``templates``, ``known_hosts``) are relative to the
file's directory. A flag wins over its ``OBRECONCILE_<OPTION>`` variable, which wins over this
file, which wins over the built-in default (click's ``default_map``). An unknown key or a value
of the wrong type is an error naming the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.errors import ObreconcileError
from reconciler.manifest.root import CONFIG_FILE, find_upwards

CONFIG_ENV = "OBRECONCILE_CONFIG"
CONNECTION_COMMANDS = ("plan", "apply", "serve", "converge")
TEMPLATE_COMMANDS = ("plan", "apply", "render")  # serve and converge render with the store's
# key -> (type, check, what it must be); paths are resolved against the file's directory
CONNECTION: dict[str, tuple[type, str]] = {
    "known_hosts": (str, "a path"),
    "forks": (int, "an integer from 1 to 500"),
    "connect_timeout": (float, "a number of seconds, at least 0.1"),
    "accept_new_host_keys": (bool, "true or false"),
}


class ConfigError(ObreconcileError):
    """The shared configuration file cannot be used."""


@dataclass(frozen=True)
class SharedConfig:
    """What ``obreconcile.yaml`` says (nothing: no file was found)."""

    path: Path | None = None
    store: str | None = None
    templates: str | None = None
    connection: Mapping[str, Any] = field(default_factory=dict)

    def default_map(self) -> dict[str, Any]:
        """click's default_map: the group's ``store``, and each command's options."""
        out: dict[str, Any] = {}
        if self.store is not None:
            out["store"] = self.store
        for command in (*CONNECTION_COMMANDS, "render"):
            options: dict[str, Any] = {}
            if command in CONNECTION_COMMANDS:
                options.update(self.connection)
            if self.templates is not None and command in TEMPLATE_COMMANDS:
                options["templates"] = self.templates
            if options:
                out[command] = options
        return out


def find_config(start: Path | None = None) -> Path | None:
    """``OBRECONCILE_CONFIG``, or the nearest obreconcile.yaml from ``start`` (the current directory) up."""
    named = os.environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={named}: no such file")
        return path
    directory = find_upwards(start or Path.cwd(), [CONFIG_FILE])
    return directory / CONFIG_FILE if directory is not None else None


def load_config(path: Path | None) -> SharedConfig:
    """The configuration in ``path`` (none: the empty one)."""
    if path is None:
        return SharedConfig()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return SharedConfig(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of store, templates, connection")
    unknown = sorted(set(data) - {"store", "templates", "connection"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (known: store, templates, connection)")
    base = path.parent.absolute()
    store = _text(path, "store", data.get("store"))
    if store is not None and store.startswith("sqlite:///") and not store[len("sqlite:///") :].startswith("/"):
        store = f"sqlite:///{base / store[len('sqlite:///') :]}"
    templates = _text(path, "templates", data.get("templates"))
    connection = data.get("connection") or {}
    if not isinstance(connection, dict):
        raise ConfigError(f"{path}: connection: must be a mapping of {', '.join(CONNECTION)}")
    checked: dict[str, Any] = {}
    for key, value in connection.items():
        if key not in CONNECTION:
            raise ConfigError(f"{path}: connection: unknown key {key!r} (known: {', '.join(CONNECTION)})")
        checked[key] = _value(path, key, value)
    if "known_hosts" in checked:
        checked["known_hosts"] = str(base / checked["known_hosts"])
    return SharedConfig(path, store, str(base / templates) if templates is not None else None, checked)


def _text(path: Path, key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{path}: {key}: must be a non-empty string")
    return value


def _value(path: Path, key: str, value: Any) -> Any:
    kind, what = CONNECTION[key]
    ok = (
        isinstance(value, str) and bool(value)
        if kind is str
        else isinstance(value, bool)
        if kind is bool
        else isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 500
        if kind is int
        else isinstance(value, int | float) and not isinstance(value, bool) and value >= 0.1
    )
    if not ok:
        raise ConfigError(f"{path}: connection.{key}: must be {what} (got {value!r})")
    return value
