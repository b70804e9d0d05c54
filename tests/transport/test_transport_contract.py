"""The Transport contract, run against LocalTransport and SSHTransport (a real sshd) alike."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from reconciler.errors import CommandError, CommandTimeout, TransportError
from reconciler.transport import Transport


def test_run_returns_exit_code_and_both_streams(transport: Transport) -> None:
    result = transport.run("echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.ok
    assert transport.run("true").ok


def test_an_argv_list_is_quoted(transport: Transport) -> None:
    result = transport.run(["printf", "%s|", "a b", "it's", "$HOME", "; echo injected"])
    assert result.text == "a b|it's|$HOME|; echo injected|"


def test_stdin_is_streamed_while_output_is_read(transport: Transport) -> None:
    data = os.urandom(3 * 1024 * 1024)  # larger than any pipe or SSH window
    result = transport.run("cat; echo done >&2", input=data)
    assert result.stdout == data
    assert result.stderr == b"done\n"


def test_without_input_stdin_is_empty(transport: Transport) -> None:
    assert transport.run("cat", timeout=5).stdout == b""


def test_input_ignored_by_the_command_does_not_hang(transport: Transport) -> None:
    assert transport.run("echo ok", input=b"x" * 1024 * 1024, timeout=10).stdout == b"ok\n"


def test_timeout_raises_and_the_transport_stays_usable(transport: Transport) -> None:
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as caught:
        transport.run("sleep 10", timeout=0.5)
    assert time.monotonic() - started < 3
    assert "0.5s" in str(caught.value) and transport.target in str(caught.value)
    assert transport.run("echo still here").stdout == b"still here\n"


def test_check_raises_command_error_with_stderr(transport: Transport) -> None:
    with pytest.raises(CommandError) as caught:
        transport.run("echo boom >&2; exit 7", check=True)
    assert caught.value.exit_code == 7
    assert caught.value.stderr == b"boom\n"
    assert "boom" in str(caught.value)


def test_run_batch_runs_every_command_in_one_call(transport: Transport) -> None:
    results = transport.run_batch(
        {
            "first": "echo one",
            "failing": "echo bad >&2; exit 5",
            "exits": "exit 9",
            "no-newline": ["printf", "%s", "tail"],
            "binary": "printf '\\000\\377\\n\\n'",
            "stdin": "cat",
            "last": "echo two; echo warn >&2",
        }
    )
    assert list(results) == ["first", "failing", "exits", "no-newline", "binary", "stdin", "last"]
    assert (results["first"].exit_code, results["first"].stdout) == (0, b"one\n")
    assert (results["failing"].exit_code, results["failing"].stderr) == (5, b"bad\n")
    assert results["exits"].exit_code == 9
    assert results["no-newline"].stdout == b"tail"
    assert results["binary"].stdout == b"\x00\xff\n\n"
    assert results["stdin"].stdout == b""
    assert (results["last"].stdout, results["last"].stderr) == (b"two\n", b"warn\n")


def test_read_file(transport: Transport, tmp_path: Path) -> None:
    path = tmp_path / "present.bin"
    data = bytes(range(256)) * 300
    path.write_bytes(data)
    assert transport.read_file(str(path)) == data
    assert transport.read_file(str(tmp_path / "missing")) is None
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert transport.read_file(str(tmp_path / "dangling")) is None


def test_read_files_in_one_call(transport: Transport, tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"")
    paths = [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c")]
    assert transport.read_files(paths) == {paths[0]: b"A", paths[1]: b"", paths[2]: None}


def test_reading_a_directory_is_an_error(transport: Transport, tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        transport.read_file(str(tmp_path))


def test_describe_names_the_access_node(transport: Transport) -> None:
    assert transport.name in transport.describe()
    assert transport.target in transport.describe()


def test_a_held_command_reports_everything_before_its_sentinel_lines(transport: Transport) -> None:
    held = transport.hold("echo one; echo err >&2; echo two; echo END; echo END >&2; exec cat >/dev/null")
    try:
        answer = held.read_until(b"END", 10)
        assert (answer.stdout, answer.stderr, answer.exit_code) == (b"one\ntwo\n", b"err\n", None)
    finally:
        held.release()


def test_a_held_command_that_exits_before_its_sentinel_reports_its_exit(transport: Transport) -> None:
    held = transport.hold("echo partial; echo why >&2; exit 75")
    try:
        answer = held.read_until(b"END", 10)
        assert (answer.stdout, answer.stderr, answer.exit_code) == (b"partial\n", b"why\n", 75)
    finally:
        held.release()


def test_a_held_command_silent_past_the_timeout_raises(transport: Transport) -> None:
    held = transport.hold("exec cat >/dev/null")
    try:
        with pytest.raises(CommandTimeout):
            held.read_until(b"END", 0.3)
    finally:
        held.release()
