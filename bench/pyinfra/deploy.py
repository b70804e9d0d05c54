"""The pyinfra peer of obreconcile's apply (bench/apply.py; inventory from bench/pyinfra/generate.py).

What a pyinfra 3 user writes to push the same nginx configuration: ``files.template`` renders
every upstream into one file per node (bench/ansible/templates/all.conf.j2 with the Jinja2
settings of Ansible's template module, so both peers write the same bytes) and uploads it
only when its SHA1 differs from the live file's; then, only when it changed, ``server.shell``
tests the whole configuration (``nginx -t``) and reloads nginx.

    pyinfra INVENTORY.py bench/pyinfra/deploy.py -y --parallel N --data upstreams_file=FILE.json
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import FileSystemLoader
from pyinfra.context import host
from pyinfra.operations import files, server

TEMPLATES = Path(__file__).resolve().parents[1] / "ansible" / "templates"

upstreams = json.loads(Path(host.data.upstreams_file).read_text())

config = files.template(
    name="Every upstream in one file",
    src=str(TEMPLATES / "all.conf.j2"),
    dest=f"{host.data.config_dir}/http/all.conf",
    mode="644",
    jinja_env_kwargs={"trim_blocks": True, "loader": FileSystemLoader(TEMPLATES)},
    upstreams=upstreams,
    listen_address=host.data.listen_address,
    http_port=host.data.http_port,
)

server.shell(
    name="Test the whole configuration, then reload nginx",
    commands=[host.data.nginx_test_command, host.data.nginx_reload_command],
    _if=config.did_change,
)
