"""Frozen value records for start-time settings: dataclass-like classes without dataclasses' generated code.

``@dataclass`` writes each class's ``__init__``, ``__eq__``, ``__hash__``,
``__repr__`` and ``__setattr__`` as source text and execs it; the compiled
code and the arenas it fragments stay in an idle proxy (12 settings classes:
about 300 KiB after the start's gc and malloc_trim). Classes made by
``@record`` share one set of methods that read the field names stored on the
class. Those methods are slower than generated ones: use this for values
built at start or on a configuration change, not per request.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

_C = TypeVar("_C", bound=type)


class FrozenError(AttributeError):
    """A field of a record was assigned or deleted."""


class Record:
    """The methods every record shares; ``_fields`` in declaration order, ``_defaults`` by name."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _defaults: dict[str, Any] = {}
    # The values compared and hashed, read in C (a record may be a dictionary key on a hot path).
    _key: Callable[[Any], Any] = staticmethod(lambda record: ())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        cls = type(self)
        fields = cls._fields
        if len(args) > len(fields):
            raise TypeError(f"{cls.__name__}() takes {len(fields)} positional arguments but {len(args)} were given")
        put = object.__setattr__
        for name, value in zip(fields, args):
            if name in kwargs:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {name!r}")
            put(self, name, value)
        defaults = cls._defaults
        for name in fields[len(args):]:
            if name in kwargs:
                put(self, name, kwargs.pop(name))
            elif name in defaults:
                put(self, name, defaults[name])
            else:
                raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
        if kwargs:  # what is left named no field
            raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {next(iter(kwargs))!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        key = self._key
        return key(self) == key(other)

    def __hash__(self) -> int:
        return hash(self._key(self))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__qualname__}({shown})"

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True, eq_default=True)
def record(cls: _C) -> _C:
    """The class rebuilt on ``Record`` with a slot per annotated field (defaults: the values set in its body)."""
    if cls.__bases__ != (object,):
        raise TypeError(f"@record {cls.__name__}: a record has no base class")
    annotations = cls.__dict__.get("__annotations__", {})
    fields = tuple(name for name, kind in annotations.items() if not str(kind).startswith("ClassVar"))
    namespace = {k: v for k, v in cls.__dict__.items() if k not in fields and k not in ("__dict__", "__weakref__")}
    namespace.update(
        __qualname__=cls.__qualname__,  # kept by the type, not in its __dict__
        __slots__=fields,
        __match_args__=fields,
        _fields=fields,
        _key=attrgetter(*fields) if fields else Record._key,
        _defaults={name: cls.__dict__[name] for name in fields if name in cls.__dict__},
    )
    required = [name for name in fields if name not in namespace["_defaults"]]
    if required and fields.index(required[-1]) >= len(required):
        raise TypeError(f"@record {cls.__name__}: field {required[-1]!r} without a default follows one with a default")
    return type(cls.__name__, (Record,), namespace)  # type: ignore[return-value]


def replace(value: Any, **changes: Any) -> Any:
    """A copy of the record ``value`` with ``changes`` applied (``dataclasses.replace`` for records)."""
    unknown = [name for name in changes if name not in value._fields]
    if unknown:
        raise TypeError(f"{type(value).__name__} has no field {unknown[0]!r}")
    return type(value)(**{name: changes.get(name, getattr(value, name)) for name in value._fields})
