"""What a stage's outputs were made from, and whether they still match it: one record for every stage.

A stage writes a :class:`StageRecord` beside its outputs: the parameters that shaped them and a stamp of each input
file (its path, size and modification time). On the next run it builds the record it would write now; when the two
match, the outputs are reused, otherwise :meth:`StageRecord.differences` says what changed (``parameters.seed: 0 ->
1``, ``inputs.csv: changed``), which is what a rerun prints or raises.

Example:
    >>> rec = StageRecord.of({'seed': 0}, {})
    >>> rec.matches(StageRecord.from_dict(rec.to_dict()))
    True
    >>> StageRecord.of({'seed': 1}, {}).differences(rec)
    ['parameters.seed: 0 -> 1']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io import plain, read_json

__all__ = ['StageRecord', 'file_stamp']


def file_stamp(path: str | os.PathLike | None, *, relative: bool = False) -> list | None:
    """``[path, size, mtime_ns]`` of a file, or None when there is none.

    Args:
        path: The file.
        relative: Record the file name only, not the resolved path (for a file that moves with its folder).
    """
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return None
    st = p.stat()
    return [p.name if relative else str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)]


def _stamps(value: Any, relative: bool) -> Any:
    if value is None or isinstance(value, (str, os.PathLike)):
        return file_stamp(value, relative=relative)
    if isinstance(value, Sequence):
        return [file_stamp(v, relative=relative) for v in value]
    raise TypeError(f'an input must be a path, a list of paths or None; got {type(value).__name__}.')


@dataclass(frozen=True)
class StageRecord:
    """The parameters and input files a stage's outputs were made from.

    Attributes:
        parameters: JSON-ready values (numbers, strings, lists, dicts) that shaped the outputs.
        inputs: ``{name: stamp}``, one :func:`file_stamp` (or a list of them) per input.
    """

    parameters: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        parameters: Mapping[str, Any],
        inputs: Mapping[str, Any],
        *,
        relative: bool = False,
    ) -> StageRecord:
        """The record of ``parameters`` and the input files named in ``inputs`` (paths, lists of paths or None).

        Args:
            parameters: What shaped the outputs.
            inputs: ``{name: path | [paths] | None}``; each file is stamped now.
            relative: Stamp file names, not resolved paths.
        """
        return cls(plain(dict(parameters)), {k: _stamps(v, relative) for k, v in inputs.items()})

    def to_dict(self) -> dict[str, Any]:
        """``{'parameters': ..., 'inputs': ...}``, for a JSON file."""
        return {'parameters': self.parameters, 'inputs': self.inputs}

    @classmethod
    def from_dict(cls, data: Any) -> StageRecord | None:
        """The record saved by :meth:`to_dict`; None for anything else (an older format, a broken file)."""
        if not isinstance(data, dict) or not isinstance(data.get('parameters'), dict):
            return None
        inputs = data.get('inputs')
        return cls(data['parameters'], inputs if isinstance(inputs, dict) else {})

    @classmethod
    def read(cls, path: str | os.PathLike, key: str = 'record') -> StageRecord | None:
        """The record under ``key`` of the JSON file ``path``; None when the file or the record is missing."""
        try:
            data = read_json(path)
        except (OSError, ValueError):
            return None
        return cls.from_dict(data.get(key) if isinstance(data, dict) else None)

    def differences(self, earlier: StageRecord | None) -> list[str]:
        """What changed from ``earlier`` to this record, one line per key; every line when there is none."""
        if earlier is None:
            return ['no earlier record']
        out = []
        for part in ('parameters', 'inputs'):
            now, then = getattr(self, part), getattr(earlier, part)
            for key in sorted(now.keys() | then.keys()):
                if key not in then:
                    out.append(f'{part}.{key}: new')
                elif key not in now:
                    out.append(f'{part}.{key}: gone')
                elif plain(now[key]) != plain(then[key]):
                    out.append(
                        f'{part}.{key}: {then[key]!r} -> {now[key]!r}'
                        if part == 'parameters'
                        else f'{part}.{key}: changed'
                    )
        return out

    def matches(self, earlier: StageRecord | None) -> bool:
        """Whether outputs made under ``earlier`` are still what this record would make."""
        return earlier is not None and not self.differences(earlier)
