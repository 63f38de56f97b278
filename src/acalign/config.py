"""Config dataclasses that round-trip through YAML/JSON.

Every extractor and model owns a small dataclass; :func:`to_dict` and :func:`from_dict` move it
in and out of plain dictionaries so the same config is saved inside every output it produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml

from acalign.errors import AcalignError, DataError

T = TypeVar("T")

#: The largest seed numpy and Lightning accept (seeds are in [0, MAX_SEED]).
MAX_SEED = 2**32 - 1


def to_dict(config: Any) -> dict[str, Any]:
    """Return a dataclass instance as a plain dictionary (tuples as lists), ready for JSON/YAML."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def from_dict(cls: type[T], values: dict[str, Any] | None, *, source: str = "config") -> T:
    """Build ``cls`` from a dictionary, rejecting unknown keys with a clear error.

    Nested dataclass fields are built recursively; missing keys take the field defaults.
    """
    values = dict(values or {})
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise AcalignError(
            f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"expected some of {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        hint = hints.get(name, known[name].type)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, source=f"{source} [{name}]")  # type: ignore[arg-type]
        kwargs[name] = _checked_scalar(value, hint, name=name, source=source)
    return cls(**kwargs)


_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _checked_scalar(value: Any, hint: Any, *, name: str, source: str) -> Any:
    """``value`` checked against a scalar annotation (``int``, ``float | None``, ...).

    Other annotations pass unchecked. Values YAML reads as another type but that mean the
    same are taken: ``1e-3`` (text to YAML, no dot) for a float, ``100.0`` for an int, ``0``/``1``
    for a bool, ``32`` for a string (``precision: 32``).
    """
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    scalars = [t for t in allowed if t in _SCALAR_NAMES]
    if not scalars or len(scalars) + (type(None) in allowed) != len(allowed):
        return value
    if value is None and type(None) in allowed:
        return value
    for kind in scalars:
        try:
            return _as_scalar(value, kind)
        except ValueError:
            continue
    expected = " or ".join(_SCALAR_NAMES[t] for t in scalars) + (" or null" if type(None) in allowed else "")
    raise AcalignError(f"{source}: {name} must be {expected}, got {value!r}")


def _as_scalar(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` when it means one; ``ValueError`` otherwise."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind is bool and (isinstance(value, bool) or (is_int and value in (0, 1))):
        return bool(value)
    if kind is int and (is_int or (isinstance(value, float) and value.is_integer())):
        return int(value)
    if kind is float and (is_int or isinstance(value, float)):
        return value
    if kind is float and isinstance(value, str):
        return float(value)
    if kind is str and (isinstance(value, str) or is_int):
        return str(value)
    raise ValueError(value)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, raising :class:`AcalignError` naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise AcalignError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise AcalignError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AcalignError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def read_json(
    path: str | os.PathLike, *, what: str = "file", error: type[AcalignError] = AcalignError
) -> Any:
    """Parse a JSON file; a missing or malformed file raises ``error`` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None


def require_directory_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` can be (or is) a directory: neither it nor a parent is a file.

    Raises:
        DataError: naming the first of ``path`` and its parents that exists as a non-directory.
    """
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise DataError(f"{part}: exists and is not a directory")
    return path


def require_file_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` is not a directory (so a file can be written there); return it.

    Raises:
        DataError: ``path`` is an existing directory.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a file name")
    return path


def ensure_directory(path: str | os.PathLike) -> Path:
    """Create ``path`` (and its parents) as a directory if needed; return it.

    Raises:
        DataError: ``path`` or one of its parents exists and is not a directory, or the
            folder cannot be created (no permission, ...).
    """
    path = require_directory_path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{path}: cannot create the folder ({exc.strerror or exc})") from None
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file beside it and a rename (never half-written).

    The file gets the mode a plain ``open()`` would give it (``mkstemp`` makes 0600); the
    temporary file is removed if the body raises.

    Raises:
        AcalignError: ``path`` is a directory, or its folder cannot be created.
    """
    path = require_file_path(path)
    ensure_directory(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    with atomic_output(path) as handle:
        handle.write(text)


def _current_umask() -> int:
    """Return the process umask (reading it requires setting it; restored at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def atomic_write_yaml(path: str | os.PathLike, data: Any) -> None:
    """Write YAML atomically (temporary file, then rename)."""
    atomic_write_text(path, yaml.safe_dump(data, sort_keys=False))
