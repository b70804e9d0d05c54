"""The shell that asks an access node's nginx which revision it serves, from the node itself.

``probe_function`` defines ``obr_probe`` (bash's own ``/dev/tcp``: no process; elsewhere curl,
wget or python3); verify polls it (``deploy.scripts``) and the facts read it once
(``served_command``). Pure text, no transport: ``deploy.facts`` (the plan's input) uses it.
"""

from __future__ import annotations

import shlex

from reconciler.manifest.model import AccessNode

PROBE_PATH = "/.well-known/obreconcile/revision"
PID_HEADER = "X-Obreconcile-Pid"  # the answering worker's pid (nginx's $pid), for master_function
# not in POSIX mode: there a failed ``exec 3<>`` (nginx not listening yet) would end the shell
IN_PLAIN_BASH = '[ -n "${BASH_VERSION:-}" ] && ! shopt -qo posix'


def probe_command(address: str, tool: str | None = None) -> str:
    """Ask nginx's default server at ``address`` for its revision: with ``tool`` (curl, wget or
    python3, as the node's facts found) or, unknown, the first of them that answers."""
    url = shlex.quote(f"http://{address}{PROBE_PATH}")
    commands = {
        "curl": f"curl -fsS --max-time 2 {url} 2>/dev/null",
        "wget": f"wget -qO- -T 2 {url} 2>/dev/null",
        "python3": (
            "python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=2).read().decode())' "
            f"{url} 2>/dev/null"
        ),
    }
    if tool in commands:
        return commands[tool]
    return " || ".join(commands.values())


def command_probe(command: str) -> str:
    """Shell defining ``obr_probe``: sets ``$served`` to the first line ``command`` prints."""
    return f"obr_probe() {{ served=$({command}); served=${{served%%\n*}}; }}"


def probe_address(node: AccessNode, port: int | None = None) -> str:
    """Where the node's own default server answers the revision (from the node itself), or
    with ``port`` where a tcp upstream listens."""
    address = node.listen_address
    if address in ("*", "0.0.0.0"):
        address = "127.0.0.1"
    elif address in ("[::]",):
        address = "[::1]"
    return f"{address}:{node.http_port if port is None else port}"


def served_command(node: AccessNode) -> str:
    """The revision nginx serves now, printed by bash's ``/dev/tcp`` probe (one bash process, no
    curl); nothing when the node has no bash or nginx does not answer."""
    probe = probe_function(probe_address(node)) + '\nobr_probe; printf "%s" "$served"'
    return f"if command -v bash >/dev/null 2>&1; then bash -c {shlex.quote(probe)}; fi"


def _bash_request(address: str) -> tuple[str, str]:
    """(the ``/dev/tcp`` path, the request as a printf format) of a GET of the revision at ``address``."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    return shlex.quote(f"/dev/tcp/{host}/{port}"), f"GET {PROBE_PATH} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n"


def probe_function(address: str, tool: str | None = None) -> str:
    """Shell defining ``obr_probe``, which sets ``$served`` to the revision nginx's default server
    at ``address`` answers. Under bash it is bash's own ``/dev/tcp`` and ``read``: no process
    at all, where curl costs ~8 ms of CPU a poll; under another shell ``probe_command``."""
    tcp, request = _bash_request(address)
    in_bash = (
        "obr_probe() {\n"
        f'  served=""; {{ exec 3<>{tcp}; }} 2>/dev/null || return 0\n'
        f"  printf '{request}' >&3\n"
        "  cr=$'\\r'; line=''\n"
        '  IFS= read -r -t 2 line <&3; case "$line" in "HTTP/1."?" 200"*) ;; *) exec 3<&-; return 0 ;; esac\n'
        '  while IFS= read -r -t 2 line <&3 && [ -n "${line%"$cr"}" ]; do :; done\n'
        '  IFS= read -r -t 2 line <&3; served=${line%"$cr"}; exec 3<&-\n'
        "}"
    )
    return f"if {IN_PLAIN_BASH}; then\n{in_bash}\nelse\n{command_probe(probe_command(address, tool))}\nfi"


def master_function(address: str) -> str:
    """Bash defining ``obr_master``: 0, with ``$master`` set to its pid, when the nginx worker
    answering the revision at ``address`` (its pid in the ``PID_HEADER`` of the answer) is a
    child of a process titled ``nginx: master process``; 1 otherwise (no answer, no header: a
    release rendered before the header, /proc hidden, a pid that is not an nginx worker).

    Under bash only (``/dev/tcp``, ``read -d ''``); another shell must not call it."""
    tcp, request = _bash_request(address)
    title = 'title=""; { IFS= read -r -d "" title < "/proc/$1/cmdline"; } 2>/dev/null; case "$title" in "nginx: $2 process"*) ;; *) return 1 ;; esac'
    return (
        f"obr_title() {{ {title}; }}\n"
        "obr_master() {\n"
        f'  master=""; pid=""; {{ exec 3<>{tcp}; }} 2>/dev/null || return 1\n'
        f"  printf '{request}' >&3\n"
        "  cr=$'\\r'; line=''\n"
        '  IFS= read -r -t 2 line <&3; case "$line" in "HTTP/1."?" 200"*) ;; *) exec 3<&-; return 1 ;; esac\n'
        '  while IFS= read -r -t 2 line <&3 && line=${line%"$cr"} && [ -n "$line" ]; do\n'
        f'    case "$line" in "{PID_HEADER}: "*) pid=${{line#*: }} ;; esac\n'
        "  done; exec 3<&-\n"
        '  case "$pid" in ""|*[!0-9]*) return 1 ;; esac\n'
        '  obr_title "$pid" worker || return 1\n'
        '  stat=""; { read -r stat < "/proc/$pid/stat"; } 2>/dev/null || return 1\n'
        "  stat=${stat##*') '}; set -- $stat; master=${2:-}\n"
        '  case "$master" in ""|*[!0-9]*) return 1 ;; esac\n'
        '  obr_title "$master" master\n'
        "}"
    )
