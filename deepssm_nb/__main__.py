"""``python -m deepssm_nb``: see :mod:`deepssm_nb.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == '__main__':
    raise SystemExit(main())
