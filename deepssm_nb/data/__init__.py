"""Cohorts: the offline femur cohort (LLP26 shapes, synthetic CT-like images) and ShapeWorks-style folders.

Example:
    >>> from deepssm_nb.data import build_femur_cohort
    >>> cohort = build_femur_cohort(num_subjects=10, num_particles=128, spacing=2.0, num_test=2)  # doctest: +SKIP
    >>> cohort.ids('test')                                                                      # doctest: +SKIP
"""

from __future__ import annotations

from .cohort import Cohort, Subject, load_cohort, write_manifest
from .femur import build_femur_cohort, cohort_folder_name, load_femur_cohort

__all__ = [
    'Cohort',
    'Subject',
    'build_femur_cohort',
    'cohort_folder_name',
    'load_cohort',
    'load_femur_cohort',
    'write_manifest',
]
