"""Config plumbing shared by every dataclass config: dict/YAML loading, dotted overrides.

Configs are dataclasses validated in ``__post_init__``; this module only moves values in
and out of them. YAML is read with the safe loader only.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from attnlab.errors import ConfigError

__all__ = ["from_dict", "to_dict", "load_yaml", "parse_value", "apply_dotted", "check_choice", "check_positive"]

T = TypeVar("T")


def check_choice(owner: str, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} must be one of {list(choices)}, got {value!r}")


def check_positive(owner: str, **values: Any) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{owner}.{name} must be a positive number, got {value!r}")


def _coerce(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Convert YAML/CLI values to the field's declared type, or raise a ConfigError."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is None:
        return value
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(owner, name, value, arg)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{owner}.{name}: bad value {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{owner}.{name} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(owner, name, v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}.{name} must be an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}.{name} must be a number, got {value!r}") from None
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{owner}.{name} must be a string, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return from_dict(annotation, value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{owner}.{name} must be a mapping, got {value!r}")
        return dict(value)
    return value


def from_dict(cls: type[T], values: dict[str, Any] | None) -> T:
    """Build a dataclass from a mapping; unknown keys and bad types raise ConfigError."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    kwargs = {k: _coerce(cls.__name__, k, v, hints[k]) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Dataclass -> plain dict of YAML-safe values (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(config)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML: {problem}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_value(text: str) -> Any:
    """A CLI value as YAML scalar: '4' -> 4, '1e-3' -> 0.001, 'true' -> True, '[8, 8]' -> list;
    an empty argument stays '' (YAML would make it None; 'null' gives None)."""
    if not text.strip():
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in ".eE") and value[0] in "0123456789.-+" else value
        except ValueError:
            return value
    return value


def apply_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``tree['a']['b'] = value`` for ``dotted='a.b'``, creating levels as needed."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--{dotted}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value
