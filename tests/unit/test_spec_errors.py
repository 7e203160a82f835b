"""Each invalid spec in tests/fixtures/invalid/ gets exactly the errors in its .expected file, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from ekc.spec.diagnostics import SpecErrors
from ekc.spec.load import load_spec

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "invalid"
CASES = sorted(p.stem for p in FIXTURES.glob("*.yml"))


def _errors(case: str) -> list[str]:
    spec = FIXTURES / f"{case}.yml"
    with pytest.raises(SpecErrors) as caught:
        load_spec(spec)
    prefix = f"{spec.resolve().relative_to(Path.cwd())}:" if spec.resolve().is_relative_to(Path.cwd()) else ""
    return [str(error).removeprefix(prefix).removeprefix(f"{spec}:") for error in caught.value.errors]


@pytest.mark.parametrize("case", CASES)
def test_invalid_spec_reports_exactly_the_expected_errors(case: str, request: pytest.FixtureRequest) -> None:
    expected_file = FIXTURES / f"{case}.expected"
    errors = _errors(case)
    if request.config.getoption("--update-golden"):
        expected_file.write_text("\n".join(errors) + "\n", encoding="utf-8")
    assert errors == expected_file.read_text(encoding="utf-8").splitlines()


def test_the_several_mistakes_fixture_has_one_error_per_mistake() -> None:
    lines = [int(error.split(":")[0]) for error in _errors("several_mistakes")]
    assert len(lines) == 7 and lines == sorted(lines)
