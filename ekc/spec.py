"""Load a region spec: YAML with positions → pydantic model → cross-field rules → secrets check.

Every problem is collected and reported at once as ``file:line:col: path: message``; nothing here lets a
traceback reach the user for any input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ekc.diagnostics import SpecError, SpecErrors, from_validation_error, from_yaml_error, issue
from ekc.yamlpos import PositionIndex, YamlError, load_yaml
from schemas.region import Region
from schemas.rules import check_rules

REPO_ROOT = Path(__file__).resolve().parent.parent
INVENTORIES = REPO_ROOT / "inventories"
SPEC_NAME = "region.yml"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and where it came from."""

    path: Path
    display_path: str
    sha256: str
    region: Region

    @property
    def region_dir(self) -> Path:
        """The folder that holds the spec and its secrets."""
        return self.path.parent

    @property
    def name(self) -> str:
        """The region's folder name (``example`` for inventories/example/region.yml)."""
        return self.path.parent.name


def resolve_spec(arg: str | Path) -> Path:
    """Accept a spec file, a region folder, or a region name under ``inventories/``."""
    path = Path(arg)
    if path.is_dir():
        path = path / SPEC_NAME
    elif not path.exists() and not path.suffix and (INVENTORIES / str(arg) / SPEC_NAME).exists():
        path = INVENTORIES / str(arg) / SPEC_NAME
    return path


def display_path(path: Path) -> str:
    """The spec's path as written into rendered files: the same on every machine and checkout."""
    resolved = path.resolve()
    for base in (REPO_ROOT, Path.cwd()):
        if resolved.is_relative_to(base):
            return resolved.relative_to(base).as_posix()
    return resolved.name


def message_path(path: Path) -> str:
    """The path as error messages show it: relative to the working directory when inside it."""
    resolved = path.resolve()
    return resolved.relative_to(Path.cwd()).as_posix() if resolved.is_relative_to(Path.cwd()) else str(resolved)


def read_text(path: Path, shown: str) -> str:
    """The file's text, or one clear error (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecErrors([SpecError(shown, 1, 1, "(file)", "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise SpecErrors([SpecError(shown, 1, 1, "(file)", f"not UTF-8 text ({exc.reason})")]) from None
    except OSError as exc:
        raise SpecErrors([SpecError(shown, 1, 1, "(file)", exc.strerror or str(exc))]) from None


def load_spec(arg: str | Path) -> LoadedSpec:
    """Load and validate a spec (without its secrets). Raises :class:`SpecErrors` with every problem."""
    path = resolve_spec(arg)
    text = read_text(path, message_path(path))
    region = parse_region(text, message_path(path))
    sha256 = hashlib.sha256(text.encode()).hexdigest()
    return LoadedSpec(path=path, display_path=display_path(path), sha256=sha256, region=region)


def parse_region(text: str, shown: str) -> Region:
    """Validate spec text into a :class:`Region`, reporting every structural and cross-field error."""
    try:
        data, positions = load_yaml(text, shown)
    except YamlError as exc:
        raise SpecErrors([from_yaml_error(exc, shown)]) from None
    if not isinstance(data, dict):
        raise SpecErrors([SpecError(shown, 1, 1, "(root)", "expected a mapping of spec sections")])
    try:
        region = Region.model_validate(data)
    except ValidationError as exc:
        errors = from_validation_error(exc, shown, positions, data, Region)
        partial, valid = _valid_sections(data, exc)
        errors += _rule_errors(partial, valid, shown, positions)
        raise SpecErrors(errors) from None
    errors = _rule_errors(region, None, shown, positions)
    if errors:
        raise SpecErrors(errors)
    return region


def _rule_errors(region: Region, valid: set[str] | None, shown: str, positions: PositionIndex) -> list[SpecError]:
    return [issue(shown, positions, path, message) for path, message in check_rules(region, valid)]


@cache
def _section_adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(Region.model_fields[name].rebuild_annotation())


def _valid_sections(data: dict[str, Any], exc: ValidationError) -> tuple[Region, set[str]]:
    """The sections that validated on their own, as a partial model, so their rules still run."""
    broken = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
    values: dict[str, Any] = {}
    for name, field in Region.model_fields.items():
        key = field.alias or name
        if key in broken or name in broken:
            continue
        if key in data:
            values[name] = _section_adapter(name).validate_python(data[key])
        elif not field.is_required():
            values[name] = field.get_default(call_default_factory=True)
    return Region.model_construct(**values), set(values)
