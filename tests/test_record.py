"""proxy/record.py: records behave as the frozen slotted dataclasses they replace (and hold no generated code)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from proxy.record import FrozenError, Record, record, replace


@record
class Point:
    """A docstring kept."""

    x: int
    y: int = 2
    label: str = ""

    def total(self) -> int:
        return self.x + self.y


@dataclasses.dataclass(frozen=True, slots=True)
class DataPoint:
    x: int
    y: int = 2
    label: str = ""


def test_construction_matches_a_frozen_dataclass():
    for args, kwargs in (((1,), {}), ((1, 5), {}), ((), {"x": 1, "label": "a"}), ((1,), {"label": "b", "y": 0})):
        p, d = Point(*args, **kwargs), DataPoint(*args, **kwargs)
        assert (p.x, p.y, p.label) == (d.x, d.y, d.label)
        assert repr(p) == repr(d).replace("DataPoint", "Point")
    assert Point(1).total() == 3 and Point.__doc__ == "A docstring kept."
    # No method written for the class: every record runs the same ones (what saves the memory).
    assert all(getattr(Point, m) is getattr(Record, m) for m in ("__init__", "__eq__", "__hash__", "__repr__"))


def test_bad_arguments_are_type_errors():
    for args, kwargs in (((), {}), ((1, 2, "", 4), {}), ((1,), {"x": 1}), ((1,), {"z": 1})):
        with pytest.raises(TypeError):
            Point(*args, **kwargs)
        with pytest.raises(TypeError):
            DataPoint(*args, **kwargs)


def test_equality_and_hash_by_value_and_class():
    assert Point(1) == Point(1, 2, "") and hash(Point(1)) == hash(Point(1, 2, ""))
    assert Point(1) != Point(1, 3) and Point(1) != DataPoint(1)
    assert {Point(1): "a"}[Point(1)] == "a"


def test_frozen_and_slotted():
    p = Point(1)
    with pytest.raises(FrozenError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(FrozenError):
        del p.x  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.__dict__  # noqa: B018
    assert Point.__slots__ == ("x", "y", "label") and Point.__match_args__ == ("x", "y", "label")


def test_replace_is_dataclasses_replace():
    p = Point(1, label="a")
    assert replace(p, y=7) == Point(1, 7, "a") and p == Point(1, label="a")
    with pytest.raises(TypeError):
        replace(p, z=1)


def test_a_required_field_after_a_defaulted_one_is_refused():
    with pytest.raises(TypeError):
        @record
        class Bad:
            a: int = 1
            b: int


def test_a_class_variable_is_no_field():
    @record
    class Tagged:
        kind: ClassVar[str] = "tag"
        value: int = 0

    assert Tagged._fields == ("value",) and Tagged(3).kind == "tag"
    assert repr(Tagged(3)).endswith(".<locals>.Tagged(value=3)")  # the qualified name, as a dataclass's
