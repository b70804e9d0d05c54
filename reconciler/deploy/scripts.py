"""The shell side of apply: what runs on an access node, as scripts built here (pure functions).

A changing apply sends one script (``steps_script(Deploy(...).steps())``) with the release
as a gzip-compressed tar stream on its stdin, and reads one answer: every step of SPEC.md §2
from staging to the marker in a single round trip, each step run only when the previous one
succeeded::

    stage → prune → switch → test → size → reload → verify → marker

Each step is framed like ``transport.batch`` (``<boundary> begin <step>`` … ``<boundary> end
<step> <code>``, on stdout and stderr), so ``parse_steps`` gives each step's exit code and
output and tells which steps ran. A rollback is a shorter script of the same kind. The operator's ``test_command`` and ``reload_command`` run in
subshells with stdin from /dev/null. ``verify`` polls on the node itself (no round trip per
poll): nginx's default server must answer the new revision and its error log must show no
``[emerg]``/``[alert]``/``[crit]`` line since the reload. ``marker`` renames the release's
``deployed`` marker (made by the stage from the ``staged`` one the tar brings) over it: one ``rename(2)``,
last. What happens on a failure (switch back, roll back) is decided by apply.py.
"""

from __future__ import annotations

import math
import posixpath
import secrets
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reconciler.deploy.facts import AWK_OLDER, HASH, LISTING, STAT_RECORD
from reconciler.deploy.layout import KEEP_RELEASES, LOCK_BUSY_EXIT, MARKER, NodeLayout
from reconciler.deploy.probe import IN_PLAIN_BASH, master_function
from reconciler.transport import CommandResult
from reconciler.transport.batch import parse_batch

DEPLOYED_MARKER = MARKER + ".deployed"  # in the release: renamed over MARKER once verified
# The marker's state line as facts.Marker.to_json writes it (indent 1: the only top-level key
# indented once; a value's own quotes are escaped). The stage makes the deployed marker from
# the staged one by this line alone, and fails when the staged marker has no such line: at
# 10,000 upstreams a marker is 1.5 MB, and the tar carried it twice.
STAGED_LINE, DEPLOYED_LINE = ' "state": "staged",', ' "state": "deployed",'
EMERGENCY = r"\[(emerg|alert|crit)\]"
# Verify's pauses (milliseconds): between two probes a tenth of the time it has waited so far,
# from VERIFY_POLL_MS to VERIFY_POLL_MAX_MS; the error log (three processes) and the clock are
# read when a fifth of that time has passed since the last read, from LOG_READ_MS to
# LOG_READ_MAX_MS. A reload of a large configuration keeps nginx's master parsing for seconds
# on the node's CPU, and polls at a fixed pace spent that CPU on reading the log.
VERIFY_POLL_MS, VERIFY_POLL_MAX_MS = 20, 250
LOG_READ_MS, LOG_READ_MAX_MS = 100, 1000
POLLS = "polls "  # verify's line: the probes of a revision not served yet, and the log's reads
HANDOVER_POLL, HANDOVER_POLLS = 0.05, 3  # the new revision alone for 150 ms: nginx's 100 ms handover


STAT_EXTRACTED = STAT_RECORD + ".tar"  # in a release being staged: the names tar extracted (its -v)
HOLDER = "held by "  # the line a busy lock's answer carries on stderr, then the holder's words


UNBOUND = "unbound "  # verify's line for a tcp listener that accepts no connection


def lock_command(layout: NodeLayout, wait: int, then: str = "", holder: str = "") -> str:
    """``flock`` held by a command whose stdin is ours; ``then`` runs once the lock is held.

    ``holder`` (who, which process, since when) is written into the lock file once it is held;
    when the lock stays busy for ``wait`` seconds, the command exits ``LOCK_BUSY_EXIT`` with
    ``held by <the holder's line>`` on stderr (flock locks the file, whatever it holds)."""
    lock = shlex.quote(layout.lock)
    mark = f"printf '%s\\n' {shlex.quote(holder)} > {lock} 2>/dev/null; " if holder else ""
    inner = f"echo locked; {mark}{then}\nexec cat >/dev/null" if then else f"echo locked; {mark}exec cat >/dev/null"
    parent = shlex.quote(layout.parent)
    return (
        f"{{ [ -d {parent} ] || mkdir -p -- {parent}; }} && "
        f"{{ flock -w {wait} -E {LOCK_BUSY_EXIT} {lock} sh -c {shlex.quote(inner)}; rc=$?; "
        f"[ \"$rc\" -ne {LOCK_BUSY_EXIT} ] || {{ printf '%s' {shlex.quote(HOLDER)}; cat -- {lock}; }} >&2 2>/dev/null; "
        "exit $rc; }"
    )


def switch_script(layout: NodeLayout, target: str) -> str:
    """Point ``config_dir`` at ``target`` with one rename of a new symlink over it."""
    link = f"{layout.config_dir}.obr-switch"  # -n: replace a leftover link, never write into it
    return (
        f"ln -sfn -- {shlex.quote(target)} {shlex.quote(link)} && "
        f"mv -f -T -- {shlex.quote(link)} {shlex.quote(layout.config_dir)}"
    )


def prune_script(layout: NodeLayout, staged: str) -> str:
    """Keep the KEEP_RELEASES newest releases (names sort by time), and always the live one and
    ``staged`` (the release this apply just uploaded, not live yet).

    Only names obreconcile gives releases count (``<digits>…-<revision>``): anything else in the
    releases directory is neither counted among the newest nor removed. The shell's own glob
    lists and sorts them (in the C locale, as ``sort`` would): the only processes started are
    ``readlink`` and one ``rm`` per release removed.
    """
    return (
        f"LC_ALL=C; export LC_ALL; set -- {shlex.quote(layout.releases)}/[0-9]*-*; n=$(($# - {KEEP_RELEASES})); "
        f'[ "$n" -gt 0 ] || exit 0; live=$(readlink -- {shlex.quote(layout.config_dir)} || true); '
        f"staged={shlex.quote(staged)}; "
        'for r; do [ "$n" -gt 0 ] || break; n=$((n - 1)); '
        '[ "$r" = "$live" ] || [ "$r" = "$staged" ] || rm -rf -- "$r"; done; exit 0'
    )


# nginx's options that take an argument, as its -h lists them (a signal command may carry them)
NGINX_ARGUMENT_OPTIONS = ("-p", "-c", "-e", "-g")


def signals_reload(command: str) -> bool:
    """Whether ``command`` is nginx's own ``nginx [-q] [-p/-c/-e/-g ARG]... -s reload`` (any path
    to a binary named nginx): all such a command does is parse the configuration to find the
    master's pid file and send that master SIGHUP."""
    try:
        words = shlex.split(command)
    except ValueError:
        return False
    if not words or posixpath.basename(words[0]) != "nginx":
        return False
    signalled, rest = False, words[1:]
    while rest:
        word = rest.pop(0)
        if word == "-s" and rest[:1] == ["reload"] and not signalled:
            rest.pop(0)
            signalled = True
        elif word in NGINX_ARGUMENT_OPTIONS and rest:
            rest.pop(0)
        elif not (word == "-q" or (word[:2] in NGINX_ARGUMENT_OPTIONS and len(word) > 2)):
            return False
    return signalled


def reload_script(command: str, address: str | None) -> str:
    """Shell that reloads nginx with the operator's ``command``; when that is nginx's own
    ``-s reload`` (``signals_reload``) and ``address`` (where the node's default server answers
    the revision) is known, under bash the master whose worker answers there is sent SIGHUP
    itself, and ``command`` runs only when no such master is found or the signal cannot be sent.

    ``nginx -s reload`` parses the whole configuration before it signals: at 10,000 upstreams
    5-7 s of the node's CPU, a third of a change's, while ``test`` has just parsed the same
    files and the master parses them again on SIGHUP. The master found is the one verify then
    asks for the new revision; prints ``signalled <pid>`` when it was signalled. Runs in a
    subshell (the steps' and restore's own): it exits."""
    if address is None or not signals_reload(command):
        return command
    return (
        f"if {IN_PLAIN_BASH}; then\n{master_function(address)}\n"
        '  if obr_master && kill -HUP "$master" 2>/dev/null; then printf \'signalled %s\\n\' "$master"; exit 0; fi\n'
        f"fi\n{command}"
    )


def listen_function(tool: str | None = None) -> str:
    """Shell defining ``obr_listens HOST PORT``: 0 when something accepts a TCP connection there.
    Under bash its own ``/dev/tcp`` (no process); else python3 when the node has it; else it
    answers 0 (unchecked: plain sh cannot open a socket)."""
    python = (
        "python3 -c 'import socket,sys;socket.create_connection((sys.argv[1],int(sys.argv[2])),2).close()' "
        '"$1" "$2" 2>/dev/null'
    )
    other = python if tool == "python3" else "return 0"
    return (
        f"if {IN_PLAIN_BASH}; then\n"
        '  obr_listens() { { exec 4<>"/dev/tcp/$1/$2"; } 2>/dev/null || return 1; exec 4<&-; }\n'
        f"else\n  obr_listens() {{ {other}; }}\nfi"
    )


# ``obr_sleep SECONDS``: under bash a read that times out on a pipe nobody writes to (no
# process; eval keeps the bash-only ``<(:)`` from other shells' parsers), else sleep(1).
SLEEP_FUNCTION = (
    "if [ -n \"${BASH_VERSION:-}\" ] && ! shopt -qo posix && { eval 'exec 9<> <(:)'; } 2>/dev/null; then\n"
    '  obr_sleep() { read -r -t "$1" -u 9 _; }\n'
    "else\n"
    '  obr_sleep() { sleep "$1"; }\n'
    "fi"
)
NOW = "${EPOCHSECONDS:-$(date +%s)}"  # bash 5 has the clock built in


QUIET_LOG = 0.6  # seconds: longer than nginx's 500 ms between two tries to bind a listener
QUIET_TRIES = 10


def settled_log_size(error_log: str) -> str:
    """The error log's size once it stopped growing for ``QUIET_LOG`` seconds (at most
    ``QUIET_TRIES`` waits); '' when there is no log.

    A reload that cannot bind a listener keeps nginx's master trying again every 500 ms, five
    times, each with an ``[emerg]`` line: a rollback's own verify must start counting after
    them, or it reports the failed reload's lines as its own."""
    log = shlex.quote(error_log)
    size = f"stat -c %s -- {log} 2>/dev/null || true"
    return (
        f"{SLEEP_FUNCTION}\ns=$({size}); i=0\n"
        f'while [ -n "$s" ] && [ $i -lt {QUIET_TRIES} ]; do obr_sleep {QUIET_LOG}; t=$({size}); '
        f'[ "$t" = "$s" ] && break; s=$t; i=$((i + 1)); done\nprintf \'%s\' "$s"'
    )


def verify_script(
    revision: str,
    probe: str | None,
    error_log: str,
    log_size: str,
    timeout: float,
    listeners: Sequence[str] = (),
    listens: str = "",
) -> str:
    """Poll until nginx serves ``revision`` (``probe``: shell defining ``obr_probe``, see
    ``probe_function``; None: no probe) or its error log shows an emergency since byte
    ``log_size`` (a shell word, '' when the log was not found), or ``timeout`` seconds passed.
    Prints ``served <answer>`` and the log's emergency lines; exits 0 only when nginx serves
    the revision (no probe: when the log is clean).

    A poll starts no process under bash (the probe, the pause and the clock are built in), at
    most two elsewhere. The pause between two polls is a tenth of the time verify has waited
    (20 to 250 ms) and the log (three processes) is read when a fifth of it has passed since
    the last read (0.1 to 1 s), and once at the end: the new revision is seen at most ~10 %
    after nginx serves it and a failed reload's ``[emerg]`` ~20 % after it is logged, while a
    master that parses a large configuration for seconds is left the node's CPU (at 10,000
    upstreams a fixed 20 ms pace read the log 140 times in 14 s: 0.6 s of CPU). The counts
    are verify's ``polls <probes> <reads of the log>`` line.

    The first answer of the new revision is not the end of a reload: nginx's master starts
    the new workers, sleeps 100 ms ("allow new processes to start", ngx_process_cycle.c) and
    only then tells the old ones to stop accepting. The new revision must answer every probe
    for ``HANDOVER_POLLS`` x ``HANDOVER_POLL`` seconds more, so that a request sent after
    apply returns meets the new configuration.

    ``listeners`` (``host:port``, IPv6 in brackets): the tcp upstreams' addresses, each of which
    must then accept a connection (``listens``: shell defining ``obr_listens``, see
    ``listen_function``); one that does not prints ``unbound <address>`` and fails verify: a
    node whose nginx.conf does not include the stream files serves http alone.
    """
    log = shlex.quote(error_log)
    check_log = (
        f'if [ -n "{log_size}" ]; then bad=$(tail -c +$(({log_size} + 1)) -- {log} 2>/dev/null | '
        f"grep -E '{EMERGENCY}' | tail -n 3); fi"
    )
    if probe is None:
        return f'bad=""; {check_log}; printf \'%s\\n\' "$bad"; [ -z "$bad" ]'
    want = shlex.quote(revision)
    # t: milliseconds paused so far (a clock without a process, a little behind the real one:
    # once it passed the timeout, so has the real one); last: t at the last read of the log;
    # p: the next pause, printed as seconds (p < 1000)
    return (
        f"{probe}\n{SLEEP_FUNCTION}\n"
        f'bad=""; served=""; n=0; reads=0; ok=0; t=0; last=0; end=$(( {NOW} + {math.ceil(timeout) + 1} ))\n'
        "while :; do\n"
        "  obr_probe\n"
        f'  if [ "$served" = {want} ]; then\n'
        f'    ok=$((ok + 1)); [ "$ok" -gt {HANDOVER_POLLS} ] && break; obr_sleep {HANDOVER_POLL}; continue\n'
        "  fi\n"
        "  ok=0; n=$((n + 1))\n"
        f"  r=$((t / 5)); [ $r -ge {LOG_READ_MS} ] || r={LOG_READ_MS}; [ $r -le {LOG_READ_MAX_MS} ] || r={LOG_READ_MAX_MS}\n"
        "  if [ $((t - last)) -ge $r ]; then\n"
        f'    last=$t; reads=$((reads + 1)); {check_log}; [ -n "$bad" ] && break; [ "{NOW}" -lt "$end" ] || break\n'
        "  fi\n"
        f"  p=$((t / 10)); [ $p -ge {VERIFY_POLL_MS} ] || p={VERIFY_POLL_MS}; [ $p -le {VERIFY_POLL_MAX_MS} ] || p={VERIFY_POLL_MAX_MS}\n"
        "  case $p in ?) s=0.00$p ;; ??) s=0.0$p ;; *) s=0.$p ;; esac\n"
        f'  obr_sleep "$s"; t=$((t + p)); [ $t -lt {math.ceil(timeout * 1000)} ] || break\n'
        "done\n"
        f"{check_log}\n"
        "printf 'served %s\\n' \"$served\"; printf '%s\\n' \"$bad\"\n"
        f'printf \'{POLLS}%s %s\\n\' "$n" "$reads"\n'
        f'[ -z "$bad" ] && [ "$served" = {want} ]{_listeners_check(listeners, listens)}'
    )


def _listeners_check(listeners: Sequence[str], listens: str) -> str:
    """`` && <every listener accepts>`` for verify's last line ('' with no listener)."""
    if not listeners:
        return ""
    checks = []
    for address in listeners:
        host, _, port = address.rpartition(":")
        checks.append(
            f"obr_listens {shlex.quote(host.strip('[]'))} {port} || {{ printf '%s\\n' {shlex.quote(UNBOUND + address)}; unbound=1; }}"
        )
    body = "\n  ".join(checks)
    return f' && {{\n  {listens}\n  unbound=0\n  {body}\n  [ "$unbound" -eq 0 ]\n}}'


def deployed_marker(release: str) -> str:
    """Write the release's deployed marker: its staged marker with the state line changed (sed);
    fails (naming the file) when the staged marker has no state line to change."""
    staged = shlex.quote(posixpath.join(release, MARKER))
    deployed = shlex.quote(posixpath.join(release, DEPLOYED_MARKER))
    return (
        f"sed 's/^{STAGED_LINE}$/{DEPLOYED_LINE}/' {staged} > {deployed} && "
        f"{{ grep -q '^{DEPLOYED_LINE}$' {deployed} || {{ printf 'no state line in %s\\n' {staged} >&2; false; }}; }}"
    )


def record_script(base: str | None) -> str:
    """Shell run in a staged release (its directory the current one) once its files are all
    there: write its stat record (facts.STAT_RECORD), from which the facts of later applies
    hash only the files that changed since.

    A file the tar brought (its name in ``STAT_EXTRACTED``, tar's own list) is hashed here: the
    work is the change's. A file copied from ``base`` (the live release) keeps the digest of
    base's record when base's file, after the copy, still has the recorded stat and a ctime
    older than that record: it was not written since it was hashed, so the copy holds those
    bytes (a hand edit of the live file between the facts and the copy is hashed, never
    laundered). Any other file is hashed. The record is stamped 20 ms after the last file
    was written, so that its mtime is later than every file's ctime (file times come from a
    clock that moves in 1-10 ms steps). Prints ``hashed <n> of <files>``; exits non-zero when
    the node cannot (no GNU find, no awk): the stage then goes on without a record."""
    record = shlex.quote(f"{STAT_RECORD}.new")
    todo = shlex.quote(f"{STAT_RECORD}.todo")
    listing, base_listing = shlex.quote(f"{STAT_RECORD}.z"), shlex.quote(f"{STAT_RECORD}.b")
    if base is None:
        base_record, list_base = "/dev/null", ":"
    else:
        base_record = shlex.quote(posixpath.join(base, STAT_RECORD))
        list_base = f"cd {shlex.quote(base)} && {LISTING}"
    program = (
        f'{AWK_OLDER}\nBEGIN {{ printf "" > todo }}\n'
        'FILENAME == rec { i = index($1, " "); sha[$2] = substr($1, 1, i - 1); st[$2] = substr($1, i + 1); next }\n'
        'FILENAME == base { split($1, f, " "); if (($2 in st) && st[$2] == $1 && older(f[3], stamp)) ok[$2] = 1; next }\n'
        'FILENAME == ext { x["./" $0] = 1; next }\n'
        '$1 == "I" { next }\n'
        '{ total++; if (!($2 in x) && ($2 in ok)) print sha[$2] " " $1 "\\t" $2 > out\n'
        "  else { z[$2] = $1; print $2 > todo } }\n"
        'END { close(todo); cmd = hash " < " todo\n'
        '  while ((cmd | getline line) > 0) { p = substr(line, 67); if (p in z) { print substr(line, 1, 64) " " z[p] "\\t" p > out; hashed++ } }\n'
        '  close(cmd); close(out); printf "hashed %d of %d\\n", hashed, total }'
    )
    extracted = shlex.quote(STAT_EXTRACTED)
    return (
        f'rec={base_record}; stamp=0; if [ -f "$rec" ]; then stamp=$(find "$rec" -printf \'%T@\'); else rec=/dev/null; fi && '
        f"{LISTING} > {listing} && ( {list_base} ) > {base_listing} && awk -F '\t' -v stamp=\"$stamp\" "
        f'-v rec="$rec" -v base={base_listing} -v ext={extracted} -v out={record} -v todo={todo} '
        f'-v hash={shlex.quote(HASH)} {shlex.quote(program)} "$rec" {base_listing} {extracted} {listing} && '
        f"sleep 0.02 && touch -- {record} && mv -f -- {record} {shlex.quote(STAT_RECORD)}; "
        f"rc=$?; rm -f -- {listing} {base_listing} {todo} {extracted} {record}; exit $rc"
    )


@dataclass(frozen=True)
class Deploy:
    """What one changing apply runs on a node: ``steps()``, in order."""

    layout: NodeLayout
    release: str
    test_command: str
    reload_command: str  # shell that reloads nginx (reload_script of the node's reload_command)
    error_log: str
    revision: str
    probe: str | None  # shell defining obr_probe (probe_function); None: verify reads only the error log
    verify_timeout: float
    base: str | None = None  # the live release: its files are copied, the tar brings only what differs
    removed: tuple[str, ...] = ()  # paths (relative) of ``base`` the new release does not have
    carried: tuple[str, ...] = ()  # without ``base``: paths (relative) copied from ``previous`` as they are
    previous: str | None = None  # the release live before (None: no managed directory before)
    listeners: tuple[str, ...] = ()  # the tcp upstreams' host:port, each must accept after the reload
    probe_tool: str | None = None  # curl, wget or python3 (the node's facts), for listen_function

    def restore(self) -> str:
        """Shell run when the script loses its controller (a signal, or its output's pipe closed
        when the connection went away) in step ``$obr_step``: put the node back on ``previous``,
        consistently, files and nginx both. Before the switch: remove the release. From the
        switch to the test: link ``previous`` again. From the reload on: link it and reload it.
        At the marker: nothing (the new release was verified; a missing marker makes the next
        apply reload and verify it)."""
        q = shlex.quote(self.release)
        back = (
            switch_script(self.layout, self.previous)
            if self.previous
            else f"rm -f -- {shlex.quote(self.layout.config_dir)}"
        )
        return (
            'case "$obr_step" in\n'
            f"  stage|prune) rm -rf -- {q} ;;\n"
            f"  switch|test|size) {back}; rm -rf -- {q} ;;\n"
            f"  reload|verify) {back}; ( {self.reload_command} ) </dev/null; rm -rf -- {q} ;;\n"
            "esac"
        )

    def steps(self) -> dict[str, str]:
        q = shlex.quote(self.release)
        log = shlex.quote(self.error_log)
        deployed = shlex.quote(f"{self.release}/{DEPLOYED_MARKER}")
        copy = ""
        if self.base is not None:  # a copy, not hard links: a hand edit of the live file must not reach the old release
            copy = f"cp -a -- {shlex.quote(self.base)}/. {q}/ && rm -f -- {shlex.quote(f'{self.release}/{STAT_RECORD}')} && "
            if self.removed:
                copy += f"rm -f -- {' '.join(shlex.quote(f'{self.release}/{p}') for p in self.removed)} && "
        elif self.carried and self.previous is not None:  # a refused upstream's files, kept as they are
            for path in self.carried:
                target = shlex.quote(f"{self.release}/{path}")
                parent = shlex.quote(posixpath.dirname(f"{self.release}/{path}"))
                copy += f"mkdir -p -- {parent} && cp -p -- {shlex.quote(f'{self.previous}/{path}')} {target} && "
        return {
            # umask 022 with --no-same-permissions: files 0644, directories 0755 (a+rX), no chmod -R
            # the stat record (record_script) is the facts' shortcut: without it they hash every file
            "stage": (
                f"umask 022; mkdir -p -- {q} && {copy}mkdir -p -- {shlex.quote(f'{self.release}/.obreconcile')} && "
                f"tar -xzv --no-same-owner --no-same-permissions -C {q} -f - > {shlex.quote(f'{self.release}/{STAT_EXTRACTED}')} && "
                f"{deployed_marker(self.release)} || {{ rc=$?; rm -rf -- {q}; exit $rc; }}\n"
                f"( cd {q} && {record_script(self.base)} ) 2>/dev/null || rm -f -- {shlex.quote(f'{self.release}/{STAT_RECORD}')} "
                f"{shlex.quote(f'{self.release}/{STAT_EXTRACTED}')}; exit 0"
            ),
            "prune": prune_script(self.layout, self.release),
            "switch": switch_script(self.layout, self.release),
            "test": self.test_command,
            "size": f"stat -c %s -- {log} 2>/dev/null || true",
            "reload": self.reload_command,
            "verify": verify_script(
                self.revision,
                self.probe,
                self.error_log,
                "$size",
                self.verify_timeout,
                self.listeners,
                listen_function(self.probe_tool),
            ),
            "marker": f"mv -f -T -- {deployed} {shlex.quote(f'{self.release}/{MARKER}')}",
        }


def steps_script(steps: Mapping[str, str], restore: str = "") -> tuple[str, str]:
    """The script running each step while the previous one succeeded, and its boundary.

    Every step runs in a subshell with stdin from /dev/null, except ``stage`` (it reads the
    script's stdin: the release's tar stream) and ``size`` (kept in ``$size`` for ``verify``).

    ``restore``: shell run, once, when the script is signalled (HUP, INT, TERM) or its output
    breaks (PIPE: the connection to its controller closed) before the last step ended; the step
    in hand is in ``$obr_step`` (set as each step begins). The script then exits 1 with no
    further output: nobody reads it any more.
    """
    boundary = f"obr-{secrets.token_hex(16)}"
    parts = []
    if restore:
        parts.append(
            f"obr_step=''\nobr_restore() {{\n  trap '' HUP INT TERM PIPE; exec >/dev/null 2>&1 </dev/null\n"
            f"{restore}\n  exit 1\n}}\ntrap obr_restore HUP INT TERM PIPE\n"
        )
    for name, line in steps.items():
        begin = f"printf '%s begin %s\\n' {boundary} {name}; printf '%s begin %s\\n' {boundary} {name} >&2\n"
        end = f"printf '\\n%s end %s %d\\n' {boundary} {name} $rc; printf '\\n%s end %s\\n' {boundary} {name} >&2\n"
        if restore:  # a printf that fails (SIGPIPE ignored: no trap) means the same: nobody reads
            begin = f"obr_step={name}\n{{ {begin.rstrip()}; }} || obr_restore\n"
            end = f"{{ {end.rstrip()}; }} || obr_restore\n"
        if name == "stage":
            body = f"(\n{line}\n)\nrc=$?\n"
        elif name == "size":
            body = f"size=$({line})\nprintf '%s' \"$size\"; rc=0\n"
        else:
            body = f"(\n{line}\n) </dev/null\nrc=$?\n"
        parts.append(begin + body + end + '[ "$rc" -eq 0 ] || exit 0\n')
    if restore:
        parts.append("trap - HUP INT TERM PIPE\n")
    return "".join(parts) or ":", boundary


def parse_steps(result: CommandResult, boundary: str, names: Sequence[str]) -> dict[str, CommandResult]:
    """The steps that ran, in order, each with its exit code and output (a step that failed is last)."""
    ran: dict[str, CommandResult] = {}
    for name in names:
        parsed = parse_batch(result.stdout, result.stderr, boundary, [name])
        if parsed is None:
            break
        ran[name] = CommandResult(*parsed[name])
    return ran


def verify_outcome(verify: CommandResult, revision: str, probe: bool, timeout: float, stream_include: str = "") -> str:
    """'' when verify saw nginx serve ``revision``; else what went wrong (in nginx's own words).

    ``stream_include``: the line nginx.conf needs for tcp upstreams, named when one accepts no
    connection."""
    lines = verify.text.splitlines()
    served = next((line[len("served ") :].strip() for line in lines if line.startswith("served ")), "")
    unbound = [line[len(UNBOUND) :] for line in lines if line.startswith(UNBOUND)]
    emergencies = [line for line in lines if line and not line.startswith(("served ", UNBOUND, POLLS))]
    if emergencies:
        return "nginx did not load the new configuration: " + " | ".join(emergencies[-3:])
    if unbound:
        return (
            f"nginx serves the new revision, but nothing accepts connections on {', '.join(unbound)} "
            f"(tcp upstreams): nginx.conf must include the stream files, `stream {{ {stream_include} }}` "
            "(docs/render.md)"
        )
    if verify.ok:
        return ""
    if not probe:
        return "nginx did not load the new configuration"
    return f"nginx still serves revision {served or '(no answer)'} {timeout:g}s after the reload, not {revision}"
