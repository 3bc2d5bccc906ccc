"""Typed dataclass configs that load from YAML/JSON and serialize next to every checkpoint."""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmcxr import atomic
from llmcxr.errors import BadInputError

T = TypeVar("T")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A plain dict (JSON/YAML-ready: lists, str paths) of a dataclass, nested dataclasses included."""
    return _plain(dataclasses.asdict(config))


def _build(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _build(args[0], value, where) if len(args) == 1 else value
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_build(inner, v, where) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; unknown keys are an error that names them."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BadInputError(
            where, f"unknown key(s) {unknown} for {cls.__name__}", f"known keys: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _build(hints[k], v, f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def load_config(cls: type[T], path: str | Path) -> T:
    """Load a dataclass from a .yaml/.yml/.json file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(path, "config file not found", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise BadInputError(path, f"not valid {path.suffix.lstrip('.').upper()}: {err}") from None
    if not isinstance(values, dict):
        raise BadInputError(path, "expected a mapping of config keys at the top level")
    return from_dict(cls, values, str(path))


def save_config(config: Any, path: str | Path) -> None:
    """Write a dataclass as JSON (or YAML by suffix), atomically."""
    path = Path(path)
    values = to_dict(config)
    if path.suffix in (".yaml", ".yml"):
        atomic.write_text(path, yaml.safe_dump(values, sort_keys=False))
    else:
        atomic.write_json(path, values)
