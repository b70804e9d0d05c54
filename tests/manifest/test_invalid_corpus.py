"""Every invalid manifest under invalid/ produces exactly the errors its '# expect:' lines name.

A case is a file, or a directory of files (for rules across files). Each '# expect:' line is
one error without its file name (``LINE:COL: Kind/name: field: message``); ``{file}`` and
``{dir}`` stand for the case's file and directory. No other error may be reported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reconciler.errors import ManifestError
from reconciler.manifest.validate import load_desired_state

CORPUS = Path(__file__).parent / "invalid"
CASES = sorted(p for p in CORPUS.iterdir() if p.suffix == ".yaml" or p.is_dir())
_EXPECT = re.compile(r"^# expect: (.*)$", re.M)


def _expected(case: Path) -> set[str]:
    files = sorted(case.glob("*.yaml")) if case.is_dir() else [case]
    directory = case if case.is_dir() else case.parent
    expected = set()
    for path in files:
        for line in _EXPECT.findall(path.read_text()):
            line = line.replace("{file}", str(path)).replace("{dir}", str(directory))
            expected.add(f"{path}:{line}")
    return expected


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.stem)
def test_invalid_manifest_reports_exactly_the_expected_errors(case: Path) -> None:
    expected = _expected(case)
    assert expected, f"{case} has no '# expect:' line"
    with pytest.raises(ManifestError) as raised:
        load_desired_state([case])
    assert {str(p) for p in raised.value.problems} == expected
