"""Load a region spec: YAML with positions → pydantic model → cross-field rules → secrets check.

Every problem is collected and reported at once as ``file:line:col: path: message``; nothing here lets a
traceback reach the user for any input.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ekc.paths import INVENTORIES_DIR, REPO_ROOT
from ekc.spec.diagnostics import SpecError, SpecErrors, from_validation_error, from_yaml_error, issue
from ekc.spec.yamlpos import PositionIndex, YamlError, load_yaml
from schemas.region import Region
from schemas.rules import check_rules

INVENTORIES = INVENTORIES_DIR
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


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a region-sized step builds objects but no garbage cycles.

    Loading builds ~30 objects per operator, and the collector's repeated passes over them made a
    10,000-operator spec load twice as slowly; checking the secrets and rendering are alike.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_region(text: str, shown: str) -> Region:
    """Validate spec text into a :class:`Region`, reporting every structural and cross-field error."""
    with collector_paused():
        return _parse_region(text, shown)


def _parse_region(text: str, shown: str) -> Region:
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
def _field_adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    return TypeAdapter(model.model_fields[name].rebuild_annotation())


_ABSENT = object()


def _clean_value(model: type[BaseModel], name: str, data: dict[str, Any]) -> Any:
    """The validated value of one field that had no error, its default, or _ABSENT."""
    field = model.model_fields[name]
    key = field.alias or name
    if key not in data:
        return _ABSENT if field.is_required() else field.get_default(call_default_factory=True)
    try:
        return _field_adapter(model, name).validate_python(data[key])
    except ValidationError:
        return _ABSENT


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _valid_sections(data: dict[str, Any], exc: ValidationError) -> tuple[Region, set[str]]:
    """The parts that validated on their own, as a partial model, so the rules over them still run.

    A clean section is taken whole (``nodes``, and ``telephony.*`` for each of its fields); a broken
    section that is a model is taken field by field (``telephony.operators`` when only the IVR is broken).
    """
    broken = [tuple(str(part) for part in err["loc"]) for err in exc.errors() if err["loc"]]
    values: dict[str, Any] = {}
    valid: set[str] = set()
    for name, field in Region.model_fields.items():
        key = field.alias or name
        inside = [loc[1:] for loc in broken if loc[0] in (key, name)]
        annotation = field.annotation
        if not inside:
            value = _clean_value(Region, name, data)
            if value is not _ABSENT:
                values[name] = value
                subfields = annotation.model_fields if _is_model(annotation) else {}  # type: ignore[union-attr]
                valid |= {name, *(f"{name}.{sub}" for sub in subfields)}
        elif _is_model(annotation) and isinstance(data.get(key), dict):
            model: type[BaseModel] = annotation  # type: ignore[assignment]
            sub_values = _clean_fields(model, data[key], inside)
            values[name] = model.model_construct(**sub_values)
            valid |= {f"{name}.{sub}" for sub in sub_values}
    return Region.model_construct(**values), valid


def _clean_fields(model: type[BaseModel], data: dict[str, Any], broken: list[tuple[str, ...]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if any(loc and loc[0] in (field.alias or name, name) for loc in broken):
            continue
        value = _clean_value(model, name, data)
        if value is not _ABSENT:
            values[name] = value
    return values
