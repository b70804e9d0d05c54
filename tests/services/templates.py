"""A user's own template that refuses some upstreams, as a real user could write it.

``http_upstream.conf.j2`` extending the shipped one with a comment of the server names joined by
a space: fine for an upstream with one name, refused by the finaliser (the space) for an
upstream with two. Tests of the blast radius of one upstream (issue 14) use it as the trigger.
"""

from __future__ import annotations

from pathlib import Path

JOINED_NAMES = (
    '{% extends "obreconcile/http_upstream.conf.j2" %}\n'
    "{% block server_extra %}\n"
    '    # serves {{ server_names | join(" ") }}\n'
    "{% endblock %}\n"
)


def joined_names_templates(directory: Path) -> Path:
    """``directory`` (made) holding the template: pass it as ``--templates``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "http_upstream.conf.j2").write_text(JOINED_NAMES)
    return directory
