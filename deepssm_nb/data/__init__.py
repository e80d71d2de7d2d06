"""Cohorts: the offline femur cohort (LLP26 shapes, synthetic CT-like images) and ShapeWorks-style folders.

Example:
    >>> from deepssm_nb.data import build_femur_cohort
    >>> cohort = build_femur_cohort(num_subjects=10, num_particles=128, spacing=2.0, num_test=2)  # doctest: +SKIP
    >>> cohort.ids('test')                                                                      # doctest: +SKIP
"""

from __future__ import annotations

from ..config import DataConfig
from .cohort import Cohort, Subject, load_cohort, write_manifest
from .femur import build_femur_cohort, cohort_folder_name, load_femur_cohort

__all__ = [
    'Cohort',
    'Subject',
    'build_femur_cohort',
    'cohort_folder_name',
    'cohort_from_config',
    'load_cohort',
    'load_femur_cohort',
    'write_manifest',
]


def cohort_from_config(data_cfg: DataConfig) -> Cohort:
    """The cohort a config's ``data`` section names: the embedded femurs, a folder or a ShapeWorks project.

    Args:
        data_cfg: ``cfg.data`` (:class:`~deepssm_nb.config.DataConfig`); ``cohort`` is ``'femur'`` or a path,
            ``domain`` and ``image_column`` choose the domain and the image column of a project.

    Returns:
        :class:`Cohort`.
    """
    if data_cfg.cohort == 'femur':
        return load_femur_cohort(data_cfg)
    return load_cohort(data_cfg.cohort, domain=data_cfg.domain, image=data_cfg.image_column)
