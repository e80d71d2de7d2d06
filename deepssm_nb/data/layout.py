"""What a cohort folder holds: its splits and the columns of its manifest (the file kinds: :mod:`deepssm_nb.io`).

Shared by the manifest reader (:mod:`.cohort`) and the ShapeWorks readers (:mod:`.shapeworks`).
"""

from __future__ import annotations

__all__ = ['MANIFEST_COLUMNS', 'SPLITS']

SPLITS = ('train', 'test')
MANIFEST_COLUMNS = ('id', 'image', 'segmentation', 'mesh', 'particles', 'split', 'side')
