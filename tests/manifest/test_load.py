"""The loader: files, documents, locations and the limits that keep hostile YAML harmless."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.manifest import load
from reconciler.manifest.load import MAX_DEPTH, discover, load_bytes, load_file, load_paths

# libyaml's parser when PyYAML has it, and PyYAML's pure-Python one: the loader's refusals
# may not depend on which one an install has, nor on libyaml's version. Each with the loader's
# own resolver, as load uses them.
_PARSERS = list(dict.fromkeys([getattr(yaml, "CSafeLoader", yaml.SafeLoader), yaml.SafeLoader]))
_LOADERS = [load._fast(parser) for parser in _PARSERS]
_LOADER_IDS = [cls.__name__ for cls in _LOADERS]


def _messages(raw: bytes) -> list[str]:
    docs, problems = load_bytes("m.yaml", raw)
    assert not docs
    return [f"{p.line}:{p.column}: {p.message}" for p in problems]


def test_multi_document_file_keeps_every_document_and_its_location(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("kind: Group\nname: a\n---\nkind: Group\nname: b\nnested:\n  list: [x, {y: 1}]\n")
    docs, problems = load_file(path)
    assert problems == []
    assert [d.data["name"] for d in docs] == ["a", "b"]
    assert docs[1].locate(("nested", "list", 1, "y")) == (7, 17)
    assert docs[1].locate(("nested", "list", 1, "y"), key=True) == (7, 14)
    assert docs[1].locate(("nested",), key=True) == (6, 1)
    assert docs[1].locate(("missing", "deeper")) == (4, 1)  # a missing field is located at its parent


def test_directories_are_walked_sorted_skipping_hidden_entries(tmp_path: Path) -> None:
    for rel in ["b.yaml", "a.yml", "c.txt", ".hidden.yaml", ".git/x.yaml", "sub/d.yaml", "sub/.e.yaml"]:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kind: Group\n")
    files, problems = discover([tmp_path])
    assert problems == []
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.yml", "b.yaml", "sub/d.yaml"]


def test_a_missing_path_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    _, problems = load_paths([tmp_path / "nope"])
    assert [p.message for p in problems] == ["no such file or directory"]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_bytes(b"")
    _, problems = load_paths([tmp_path])
    assert [str(p) for p in problems] == [f"{tmp_path / 'empty.yaml'}:1:1: file holds no manifest documents"]


def test_binary_file_is_refused() -> None:
    assert _messages(b"\x7fELF\x02\x01\x01\x00\x00\x00") == ["1:1: not a text file (it contains NUL bytes)"]
    assert _messages(b"name: ok\nname2: \xff\xfe\n") == ["2:1: not a UTF-8 text file"]


def test_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    _, problems = load_file(path, max_file_size=1000)
    assert [p.message for p in problems] == ["file is 2,004 bytes, over the limit of 1,000 (--max-file-size)"]
    docs, problems = load_file(path, max_file_size=10_000)
    assert problems == [] and len(docs) == 1


def test_default_size_limit_admits_the_benchmark_workload() -> None:
    from reconciler.manifest.load import DEFAULT_MAX_FILE_SIZE

    # 10,000 upstreams x 10 nodes is about 12 MiB in all; even as a single file it fits.
    assert DEFAULT_MAX_FILE_SIZE >= 64 * 2**20


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        "{a: " * 10_000 + "1" + "}" * 10_000,
        "- " * 10_000 + "x\n",
        "".join(" " * i + "k:\n" for i in range(2000)) + " " * 2000 + "v\n",
        "[" * 100_000 + "]" * 100_000,  # libyaml's composer would crash on this
    ],
    ids=["flow-seq", "flow-map", "compact-seq", "indented-map", "100k-flow"],
)
@pytest.mark.parametrize("loader", _LOADERS, ids=_LOADER_IDS)
def test_deep_nesting_is_refused_fast_with_bounded_memory(
    text: str, loader: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression (PyYAML 6.0.4's libyaml): its scanner refused deep flow nesting with its own
    # message at 1:1001 before our count reached depth 65.
    monkeypatch.setattr(load, "_Loader", loader)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    messages = _messages(text.encode())
    elapsed = time.perf_counter() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(messages) == 1 and messages[0].endswith(f"nesting deeper than {MAX_DEPTH} levels is not allowed")
    # libyaml counts in milliseconds. A PyYAML without libyaml counts with its pure-Python
    # scanner, which keeps one possible key per flow level and walks them all per token within
    # its 1,024-character lookahead: about 0.2 s on a quiet machine for a run of brackets, so
    # that case gets a bound of its own (the point of the test is no crash and no blow-up).
    assert elapsed < (5.0 if issubclass(loader, yaml.SafeLoader) else 1.0)
    assert grown_mib < 100


@pytest.mark.parametrize("loader", _LOADERS, ids=_LOADER_IDS)
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[" * 1001 + "]" * 1001, "1:65"),  # below the bracket hint; past libyaml's own limit of 1,000
        ("a: " + "{b: " * 1001 + "1" + "}" * 1001 + "\n", f"1:{4 + 4 * 63}"),  # the root map is level 1
        ("x: 1\nitems: " + "[" * 70 + "]" * 70 + "\n", "2:71"),  # only the builder sees this one
    ],
    ids=["flow-seq-1001", "flow-map-1001", "flow-seq-70"],
)
def test_deep_nesting_is_located_where_depth_65_starts(
    text: str, where: str, loader: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "_Loader", loader)
    assert _messages(text.encode()) == [f"{where}: nesting deeper than {MAX_DEPTH} levels is not allowed"]


def test_alias_bomb_is_refused_fast() -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    start = time.perf_counter()
    messages = _messages("\n".join(lines).encode())
    assert time.perf_counter() - start < 1.0
    assert messages == ["7:4: aliases expand to more than 2,000,000 values (an alias bomb?)"]


def test_small_aliases_are_allowed_and_shared_values_are_equal() -> None:
    docs, problems = load_bytes("m.yaml", b"base: &n {hostname: a, weight: 2}\nnodes: [*n, *n]\n")
    assert problems == []
    assert docs[0].data["nodes"] == [{"hostname": "a", "weight": 2}] * 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: !!python/object/apply:os.system [ls]\n", "1:4: the tag !!python/object/apply:os.system is not allowed"),
        ("a: !!python/name:os.system ''\n", "1:4: the tag !!python/name:os.system is not allowed"),
        ("a: !custom x\n", "1:4: the tag !custom is not allowed"),
        ("a: !!binary aGVsbG8=\n", "1:4: the tag !!binary is not allowed"),
        ("? [a, b]\n: c\n", "1:3: mapping keys must be plain strings"),
        ("a: 1\nb: 2\na: 3\n", "3:1: duplicate key 'a' (YAML would keep only the last one)"),
        ("a:\n  b: 1\n  b: 1\n", "3:3: duplicate key 'b' (YAML would keep only the last one)"),
    ],
)
def test_refused_constructs(text: str, expected: str) -> None:
    messages = _messages(text.encode())
    assert len(messages) == 1 and messages[0].startswith(expected)


def test_yaml_11_oddities_keep_their_text_or_type() -> None:
    docs, _ = load_bytes("m.yaml", b"when: 2024-01-01\nport: 22\nflag: on\nname: '007'\n")
    assert docs[0].data == {"when": "2024-01-01", "port": 22, "flag": True, "name": "007"}


# Plain scalars of every kind PyYAML's resolver tells apart, and near misses of each.
_SCALARS = [
    "",
    "~",
    "null",
    "Null",
    "NULL",
    "nul",
    "y",
    "Y",
    "yes",
    "Yes",
    "no",
    "NO",
    "n",
    "on",
    "Off",
    "true",
    "True",
    "tRUE",
    "false",
    "0",
    "-0",
    "+12",
    "1_000",
    "0x1F",
    "0o17",
    "017",
    "0b101",
    "1:30",
    "190:20:30",
    "1.5",
    "-.5",
    "+1e3",
    "1e3",
    "6.8523015e+5",
    ".inf",
    "-.Inf",
    ".nan",
    ".NaN",
    "1.",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "2002-1-1",
    "<<",
    "<",
    "=",
    "==",
    "!x",
    "&a",
    "*b",
    "10.0.0.1:8080",
    "127.0.0.1",
    "web-1.example.com",
    "2001:db8::1",
    "-",
    "- x",
    "?",
    "...",
    "a b",
    "é",
    "名前",
    "10s",
    "0.5s",
    "80",
    "65536",
]


def _tags(node: yaml.Node) -> object:
    if isinstance(node, yaml.ScalarNode):
        return (node.tag, node.value)
    if isinstance(node, yaml.SequenceNode):
        return (node.tag, [_tags(n) for n in node.value])
    return (node.tag, [(_tags(k), _tags(v)) for k, v in node.value])


@pytest.mark.parametrize("parser", _PARSERS, ids=[cls.__name__ for cls in _PARSERS])
def test_the_loaders_resolver_tags_every_node_as_pyyamls_does(parser: type) -> None:
    plain = "".join(f"k{i}: {s}\n" for i, s in enumerate(_SCALARS) if s and s[0] not in "!&*-?")
    text = "\n---\n".join(
        [
            plain,
            "- " + "\n- ".join(repr(s) for s in _SCALARS),  # quoted: strings whatever they say
            "[" + ", ".join(f"'{s}'" for s in _SCALARS) + "]\n",
            "? [a, b]\n: {c: 1, 1.5: [x, 2001-12-14], null: ~, true: no}\nempty:\nseq: []\n",
            "!!str 1: !!int '2'\nx: ! 3\ny: !custom 4\n",
            "\n".join(f"{s}: {s}" for s in ("yes", "0x1F", "1:30", "2001-12-14", "<<", "=")),
        ]
    )
    ours = [_tags(n) for n in yaml.compose_all(text, Loader=load._fast(parser))]
    theirs = [_tags(n) for n in yaml.compose_all(text, Loader=parser)]
    assert ours == theirs
    assert load._fast(parser) is not parser  # the standard resolver: the fast one is used


@given(st.text(alphabet=" \t-?\nx[", max_size=200), st.integers(0, 1100))
def test_the_depth_hints_fire_exactly_where_their_patterns_match(text: str, indent: int) -> None:
    for candidate in (text, " " * indent + text, text + "\n" + " " * indent + "x", text.replace("x", "- ")):
        assert load._deep_indent(candidate) == (load._DEEP_INDENT.search(candidate) is not None)
        assert load._compact_run(candidate) == (load._COMPACT_RUN.search(candidate) is not None)


def test_the_depth_hints_see_long_indents_and_compact_runs() -> None:
    assert load._deep_indent("a:\n" + " " * 1024 + "b")
    assert load._deep_indent(" \t" * 512 + "b")
    assert not load._deep_indent("a:\n" + " " * 1023 + "b")
    assert load._compact_run("x: " + "-  " * 8 + "? \t" * 8)
    assert not load._compact_run("- " * 15 + "x")
