"""Conversions between a data set's value range [low, high] (data.value_range: [0, 1] or
[-1, 1]) and the unit range [0, 1] that images are viewed, binned and scored in."""

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")  # a tensor or a number


def to_unit(x: T, value_range: Sequence[float]) -> T:
    """[low, high] -> [0, 1]."""
    low, high = value_range
    return (x - low) / (high - low)


def from_unit(u: T, value_range: Sequence[float]) -> T:
    """[0, 1] -> [low, high]."""
    low, high = value_range
    return low + (high - low) * u
