"""The schemas themselves: ids, patterns that cannot backtrack, and values that stay safe."""

from __future__ import annotations

import sys
import time
import unicodedata
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from reconciler.manifest.schemas import SCHEMA_FILES, compile_pattern, schemas

# Characters that could end or open an nginx directive or block, or a shell word.
UNSAFE = set(";{}'\"$#\\`") | {chr(c) for c in range(0x20)} | {" ", "\x7f"}


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            else:
                yield from _patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _patterns(item)


ALL_PATTERNS = sorted({p for doc in schemas().values() for p in _patterns(doc)})
DEFS = schemas()["defs.schema.json"]["$defs"]
# Values that reach nginx configuration or a shell on an access node (commands keep spaces).
RENDERED = ["name", "hostname", "host", "serverName", "duration", "path", "localPath", "unixUser", "listenAddress"]


def test_every_schema_is_valid_draft_2020_12_with_an_id() -> None:
    for name, doc in schemas().items():
        Draft202012Validator.check_schema(doc)
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert doc["$id"].endswith("/" + name)
    assert set(SCHEMA_FILES.values()) <= set(schemas())


def _adversarial() -> list[str]:
    n = 50_000
    return [
        "a" * n + "!",
        "a." * (n // 2) + "!",
        "a-" * (n // 2) + "!",
        "1" * n + "x",
        "1:" * (n // 2),
        "[" + ":" * n,
        "*." * (n // 2) + "*",
        "/" + "a/" * (n // 2) + "..",
        "GET /" + "a" * n + " 200-",
        "GET / " + "200 " * (n // 4) + "x",
        "0" * n + "ms!",
        "~/" + "." * n + " ",
        "a" * n + "\n",
    ]


@pytest.mark.parametrize("pattern", ALL_PATTERNS)
def test_every_pattern_is_fast_on_adversarial_input(pattern: str) -> None:
    python_re = compile_pattern(pattern)
    rust = jsonschema_rs.validator_for({"type": "string", "pattern": pattern})
    for text in _adversarial():
        start = time.perf_counter()
        python_re.search(text)
        rust.is_valid(text)
        assert time.perf_counter() - start < 0.1, (pattern, text[:40])


@pytest.mark.parametrize("definition", RENDERED)
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_no_accepted_value_can_open_or_end_a_directive(definition: str, data: st.DataObject) -> None:
    schema = DEFS[definition]
    pattern = compile_pattern(schema["pattern"])
    accepted = data.draw(st.from_regex(pattern))
    validator = jsonschema_rs.validator_for(schema)
    if validator.is_valid(accepted):
        assert not UNSAFE & set(accepted), repr(accepted)
    anything = data.draw(st.text(max_size=40))
    if validator.is_valid(anything):
        assert not UNSAFE & set(anything), repr(anything)


@pytest.mark.parametrize("definition", RENDERED)
@pytest.mark.parametrize("value", ["web\n", "web\r\n", "a\x00", "a b", "a;b", "a}b", "é.example.com"])
def test_both_validators_refuse_control_and_separator_characters(definition: str, value: str) -> None:
    schema = DEFS[definition]
    assert not jsonschema_rs.validator_for(schema).is_valid(value)
    assert not Draft202012Validator(schema).is_valid(value) or not compile_pattern(schema["pattern"]).search(value)


REFUSED_IN_TEXT = ("Cc", "Cf", "Zl", "Zp")  # control, format, line and paragraph separators


def test_text_refuses_exactly_controls_formats_and_separators() -> None:
    """Every code point (but surrogates, which no decoder lets through): both validators refuse
    it in free text exactly when its Unicode category is Cc, Cf, Zl or Zp (Python's unicodedata;
    a Python with a newer Unicode that adds such characters fails here until the list grows)."""
    schema = DEFS["text"]
    python_re = compile_pattern(schema["pattern"])
    rust = jsonschema_rs.validator_for(schema)
    wrong = []
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue
        value = f"a{chr(code)}b"
        refused = unicodedata.category(chr(code)) in REFUSED_IN_TEXT
        if (python_re.search(value) is None) != refused or rust.is_valid(value) == refused:
            wrong.append(f"U+{code:04X}")
    assert not wrong, wrong[:20]
    assert rust.is_valid("Zoë Ñandú — 名前 ‘Ω’ 🙂") and python_re.search("Zoë Ñandú — 名前 ‘Ω’ 🙂")
