"""Small validators shared by the whole package.

Every validator raises with a message that names the argument, says what was
expected and shows what arrived, so a user can fix the call without reading
the source.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    'ConfigError',
    'DataError',
    'NotFittedError',
    'check_array',
    'check_in_range',
    'check_random_state',
    'find_by_id',
    'look_up_option',
    'nearest_spelling',
]


class ConfigError(ValueError):
    """A configuration (or a function argument mirroring one) is invalid.

    Attributes:
        problems: One line per problem, each starting with a dotted path.
    """

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        head = f'{len(self.problems)} problem(s) in the configuration:' if len(self.problems) > 1 else ''
        body = '\n'.join(f'  - {p}' for p in self.problems) if head else self.problems[0]
        super().__init__(f'{head}\n{body}' if head else body)


class DataError(ValueError):
    """Input data (files, arrays) are missing, malformed or inconsistent.

    Attributes:
        problems: One line per problem, each naming the file or array.
    """

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            body = '\n'.join(f'  - {p}' for p in self.problems)
            super().__init__(f'{len(self.problems)} problems found:\n{body}')


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit`` was called."""


def nearest_spelling(value: str, options: Iterable[str]) -> str | None:
    """Return the option closest to ``value`` (case-insensitive), or None."""
    options = list(options)
    lowered = {o.lower(): o for o in options}
    if value.lower() in lowered:
        return lowered[value.lower()]
    match = difflib.get_close_matches(value.lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[match[0]] if match else None


def look_up_option(value: Any, options: Iterable[str], *, name: str) -> str:
    """Return ``value`` if it is one of ``options`` (exact spelling).

    Args:
        value: The string given by the user.
        options: The valid spellings.
        name: The argument or config key, used in the message.

    Raises:
        ConfigError: ``value`` is not a valid option; the message suggests the
            nearest valid spelling.
    """
    options = list(options)
    if isinstance(value, str) and value in options:
        return value
    hint = ''
    if isinstance(value, str):
        near = nearest_spelling(value, options)
        if near is not None:
            hint = f" Did you mean '{near}'?"
    raise ConfigError(f'{name} must be one of {options}; got {value!r}.{hint}')


def check_in_range(
    value: Any,
    *,
    name: str,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> Any:
    """Check that a number lies in a range and return it.

    Args:
        value: The number.
        name: The argument name for the message.
        low: Lower bound (None for unbounded).
        high: Upper bound (None for unbounded).
        integer: Require an integer (bools are rejected).
        low_inclusive: Whether ``low`` itself is allowed.
        high_inclusive: Whether ``high`` itself is allowed.

    Raises:
        ConfigError: Wrong type or out of range.
    """
    kind = 'an integer' if integer else 'a number'
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.number))
    if isinstance(value, bool) or not ok_type or (not integer and not np.isfinite(value)):
        raise ConfigError(f'{name} must be {kind}; got {value!r} ({type(value).__name__}).')
    lo_ok = low is None or (value >= low if low_inclusive else value > low)
    hi_ok = high is None or (value <= high if high_inclusive else value < high)
    if not (lo_ok and hi_ok):
        lo = '(-inf' if low is None else ('[' if low_inclusive else '(') + f'{low}'
        hi = 'inf)' if high is None else f'{high}' + (']' if high_inclusive else ')')
        raise ConfigError(f'{name} must be in {lo}, {hi}; got {value!r}.')
    return value


def check_random_state(random_state: Any, *, name: str = 'random_state') -> int:
    """The one way a ``random_state`` argument becomes an integer seed.

    Args:
        random_state: A seed (an integer >= 0), a ``numpy.random.Generator`` (one integer is drawn from it, so the
            generator moves on), or None (a fresh seed from the operating system's entropy: not reproducible).
        name: The argument name for the message.

    Returns:
        An integer in [0, 2**31 - 1] for a generator or None; the seed itself for an integer.

    Raises:
        ConfigError: Not an integer >= 0, a Generator or None.
    """
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    if random_state is None:
        return int(np.random.SeedSequence().generate_state(1, np.uint32)[0] >> np.uint32(1))
    if not isinstance(random_state, (int, np.integer)) or isinstance(random_state, bool):
        raise ConfigError(
            f'{name} must be an integer >= 0, a numpy.random.Generator or None; '
            f'got {random_state!r} ({type(random_state).__name__}).'
        )
    return int(check_in_range(random_state, name=name, low=0, integer=True))


def check_array(
    x: Any,
    *,
    name: str,
    ndim: int | None = None,
    shape: tuple | None = None,
    finite: bool = True,
    source: str | None = None,
) -> np.ndarray:
    """Convert ``x`` to a float array and check its shape and values.

    Args:
        x: Array-like input.
        name: The argument name for the message.
        ndim: Required number of dimensions.
        shape: Required shape; ``None`` entries match any size.
        finite: Reject NaN and infinite values.
        source: A file the data came from, named in the message.

    Returns:
        The array as ``float64``.

    Raises:
        DataError: Wrong dimensionality, shape or non-finite values.
    """
    where = f' (from "{source}")' if source else ''
    arr = np.asarray(x, dtype=float)
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f'{name}{where} must be {ndim}D; got a {arr.ndim}D array of shape {arr.shape}.')
    if shape is not None and (
        arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape))
    ):
        want = '(' + ', '.join('any' if s is None else str(s) for s in shape) + ')'
        raise DataError(f'{name}{where} must have shape {want}; got {arr.shape}.')
    if finite and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise DataError(f'{name}{where} contains {bad} NaN or infinite value(s); all values must be finite.')
    return arr


def find_by_id(items: list, key: int | str, *, what: str = 'subject', where: str = ''):
    """Item ``key`` of ``items``: by position (int) or by its ``id`` attribute (str).

    Raises:
        KeyError: No item has that id; the message suggests the nearest id.
    """
    if not isinstance(key, str):
        return items[key]
    for item in items:
        if item.id == key:
            return item
    near = nearest_spelling(key, [item.id for item in items])
    hint = f" Did you mean '{near}'?" if near else ''
    raise KeyError(f'no {what} {key!r}{where}.{hint}')
