"""Point-set alignment (Procrustes) and image registration to a reference.

Two ways of bringing a subject into the common ("world") frame:

* **Shapes with known particles** (training subjects): a rigid Procrustes fit
  of the particles onto a mean shape, :func:`generalized_procrustes`.
* **Images without particles** (test and new subjects): an intensity-based
  registration of the image to the reference image, :func:`register_image`,
  in three stages (translation, then rigid, then similarity), each stage
  started from the previous one.

Every transform is a 4x4 homogeneous matrix ``T`` that maps a point of the
subject's ORIGINAL image to the world frame: ``p_world = T @ [p_orig, 1]``.
SimpleITK's registration and resampling use the opposite direction (a point
of the output / fixed grid is mapped to the input / moving image), so its
transforms are the inverse of ``T``; the conversion happens only here.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(50, 3))
    >>> T = np.eye(4); T[:3, 3] = [1.0, 2.0, 3.0]
    >>> np.allclose(rigid_transform(a, apply_transform(T, a)), T)
    True
"""

from __future__ import annotations

import numpy as np

from ._validation import ConfigError, DataError, check_array, check_in_range, check_random_state, look_up_option
from .imageops import coarsen_to_spacing, matrix_from_sitk, sitk_from_matrix

__all__ = [
    'apply_transform',
    'generalized_procrustes',
    'register_image',
    'registration_error',
    'rigid_transform',
    'surface_band',
]

REGISTRATION_STAGES = ('translation', 'rigid', 'similarity')
METRICS = ('mattes', 'meansquares')


# --------------------------------------------------------------------------- point sets


def apply_transform(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map points through a 4x4 homogeneous matrix.

    Args:
        T: (4, 4) matrix.
        points: (..., 3) points.

    Returns:
        (..., 3) transformed points ``T[:3, :3] @ p + T[:3, 3]``.
    """
    T = np.asarray(T, dtype=float)
    pts = np.asarray(points, dtype=float)
    return pts @ T[:3, :3].T + T[:3, 3]


def rigid_transform(source: np.ndarray, target: np.ndarray, *, scaling: bool = False) -> np.ndarray:
    """Least-squares rotation + translation (+ isotropic scale) of ``source`` onto ``target``.

    The Kabsch/Umeyama solution; reflections are excluded, so the result is a
    proper rotation even for (near) planar or mirrored inputs.

    Args:
        source: (M, 3) points.
        target: (M, 3) points in correspondence with ``source``.
        scaling: Also fit one isotropic scale factor (a similarity transform).

    Returns:
        (4, 4) matrix ``T`` minimising ``sum ||T(source) - target||^2``.

    Raises:
        DataError: Shapes differ, fewer than 3 points, or non-finite values.
    """
    src = check_array(source, name='source', shape=(None, 3))
    tgt = check_array(target, name='target', shape=(None, 3))
    if src.shape != tgt.shape:
        raise DataError(f'source and target must hold the same number of points; got {len(src)} and {len(tgt)}.')
    if len(src) < 3:
        raise DataError(f'at least 3 corresponding points are needed for an alignment; got {len(src)}.')
    mu_s, mu_t = src.mean(axis=0), tgt.mean(axis=0)
    xs, xt = src - mu_s, tgt - mu_t
    u, s, vt = np.linalg.svd(xs.T @ xt)
    d = np.ones(3)
    d[2] = np.sign(np.linalg.det(vt.T @ u.T)) or 1.0
    rot = vt.T @ np.diag(d) @ u.T
    scale = float((s * d).sum() / (xs**2).sum()) if scaling else 1.0
    T = np.eye(4)
    T[:3, :3] = scale * rot
    T[:3, 3] = mu_t - scale * rot @ mu_s
    return T


def generalized_procrustes(
    shapes: np.ndarray, *, reference: int = 0, scaling: bool = False, iterations: int = 20, tol: float = 1e-9
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes alignment of N shapes onto their own mean.

    Shapes are first aligned to ``shapes[reference]``; then, repeatedly, the
    mean of the aligned shapes is computed, fitted back onto the reference
    shape (so the frame stays the reference subject's own physical frame), and
    every shape is aligned to it again, until the mean moves less than ``tol``.

    Args:
        shapes: (N, M, 3) particles in each subject's own frame.
        reference: Index of the shape whose frame becomes the world frame.
        scaling: Allow an isotropic scale per shape (default: rigid only).
        iterations: Maximum number of refinement rounds.
        tol: Convergence threshold on the RMS change of the mean, mm.

    Returns:
        ``(transforms, mean)``: (N, 4, 4) matrices mapping each shape into the
        world frame, and the (M, 3) mean shape in that frame.

    Raises:
        DataError: ``shapes`` is not (N, M, 3) with N >= 1 and M >= 3.
    """
    x = check_array(shapes, name='shapes', ndim=3)
    if x.shape[0] < 1 or x.shape[2] != 3:
        raise DataError(f'shapes must have shape (N, M, 3) with N >= 1; got {x.shape}.')
    check_in_range(reference, name='reference', low=0, high=len(x) - 1, integer=True)
    mean = x[reference].copy()
    transforms = np.stack([rigid_transform(s, mean, scaling=scaling) for s in x])
    for _ in range(iterations):
        aligned = np.stack([apply_transform(T, s) for T, s in zip(transforms, x)])
        new_mean = aligned.mean(axis=0)
        new_mean = apply_transform(rigid_transform(new_mean, x[reference]), new_mean)
        change = float(np.sqrt(((new_mean - mean) ** 2).sum(axis=1).mean()))
        mean = new_mean
        transforms = np.stack([rigid_transform(s, mean, scaling=scaling) for s in x])
        if change < tol:
            break
    return transforms, mean


# --------------------------------------------------------------------------- SimpleITK bridges


# --------------------------------------------------------------------------- grid, mask and error


def registration_error(T: np.ndarray, particles: np.ndarray, target: np.ndarray, *, scaling: bool = True) -> np.ndarray:
    """Per-particle error of an image registration, mm.

    The registered particles ``T @ particles`` are compared with the same
    particles placed by the best point-based alignment onto ``target`` (the
    reference subject's world particles): the residual of the image
    registration beyond what a perfect shape alignment would give.

    Args:
        T: (4, 4) registration transform, original -> world.
        particles: (M, 3) true particles in the original image frame.
        target: (M, 3) reference particles in the world frame.
        scaling: Use a similarity (True) or rigid (False) best alignment;
            match the last registration stage.

    Returns:
        (M,) distances, mm.
    """
    best = rigid_transform(particles, target, scaling=scaling)
    return np.linalg.norm(apply_transform(T, particles) - apply_transform(best, particles), axis=1)


def surface_band(grid, points: np.ndarray, margin: float, *, dense: bool):
    """A registration mask: 1 on the voxels of ``grid`` within ``margin`` mm of ``points``.

    Args:
        grid: ``sitk.Image`` defining the grid (identity direction).
        points: (K, 3) surface points: mesh vertices (``dense``) or particles.
        margin: Half-width of the band, mm (at least two voxels are used).
        dense: Whether ``points`` sample the surface densely; for sparse
            particles the band is widened to their typical spacing.

    Returns:
        ``sitk.Image`` (uint8) on ``grid``.
    """
    import SimpleITK as sitk
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    spacing = grid.GetSpacing()[0]
    band = max(margin, 2 * spacing)
    if not dense and len(points) > 1:
        band = max(band, float(np.median(tree.query(points, k=2)[0][:, 1])))
    nx, ny, nz = grid.GetSize()
    zz, yy, xx = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing='ij')
    centres = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3) * spacing + np.asarray(grid.GetOrigin())
    dist, _ = tree.query(centres, distance_upper_bound=band)
    mask = sitk.GetImageFromArray((dist < band).reshape(nz, ny, nx).astype(np.uint8))
    mask.CopyInformation(grid)
    return mask


# --------------------------------------------------------------------------- image registration


def register_image(
    moving,
    reference,
    *,
    iterations: int = 200,
    bbox: np.ndarray | None = None,
    mask=None,
    stages: tuple[str, ...] = REGISTRATION_STAGES,
    metric: str = 'mattes',
    random_state: int = 0,
    num_threads: int = 1,
    name: str = 'image',
):
    """Register an image to the reference image; return it on the reference grid and ``T``.

    Stages run in the order given (default translation, rigid (Euler 3D),
    similarity), each initialised from the previous one; the first starts
    from the two images' geometric centres. Each stage is multi-resolution
    (coarsest level about 8 mm voxels) with a regular-step gradient descent
    whose parameter scales come from the physical shift they cause. A moving
    image much finer than the reference is first smoothed and resampled to
    the reference's spacing (5x faster at 1 mm images on a 2 mm grid).

    Mattes mutual information is the default metric. The images share a
    modality, but MI also tolerates scanner-to-scanner intensity scale and
    offset, and on the femur cohort it gave slightly lower errors than mean
    squares (1.45 versus 1.54 mm mean over 25 subjects, 2 mm grid).

    Args:
        moving: ``sitk.Image`` (3D), the image to align, in its original space.
        reference: ``sitk.Image`` (3D), the groomed reference image; its grid
            is the output grid.
        iterations: Optimizer iterations per stage and resolution level.
        bbox: Optional (2, 3) ``[min, max]`` world box (mm); the metric is
            evaluated only in this part of the reference, so the femur, not
            the whole field of view, drives the registration.
        mask: Optional ``sitk.Image`` on the reference grid, nonzero where
            the metric is evaluated (e.g. a band around the reference femur).
        stages: Subsequence of ``('translation', 'rigid', 'similarity')``.
        metric: ``'mattes'`` (mutual information) or ``'meansquares'``.
        random_state: Seed of the metric's random voxel sampling.
        num_threads: Threads of the registration. With 1 (the default) the
            result is reproducible to the last bit; more threads are faster
            but sum the metric in a varying order. Parallelise over images
            (processes) instead.
        name: What ``moving`` is (a file name or id), for error messages.

    Returns:
        ``(registered, T)``: ``moving`` resampled onto the reference grid
        (linear, outside filled with its minimum), and the (4, 4) matrix with
        ``p_world = T @ [p_orig, 1]``.

    Raises:
        DataError: An image is not 3D, or the registration fails (the metric
            is not finite, too few samples overlap, the result leaves the
            image or has an implausible scale); the message names ``name``.
        ConfigError: Unknown stage or metric, or ``iterations`` < 1.
    """
    import SimpleITK as sitk

    check_in_range(iterations, name='iterations', low=1, integer=True)
    check_in_range(num_threads, name='num_threads', low=1, integer=True)
    look_up_option(metric, METRICS, name='metric')
    if not stages:
        raise ConfigError(f'stages must name at least one of {list(REGISTRATION_STAGES)}; got {stages!r}.')
    for s in stages:
        look_up_option(s, REGISTRATION_STAGES, name='stages')
    for img, what in ((moving, name), (reference, 'the reference image')):
        if not isinstance(img, sitk.Image):
            raise DataError(f'{what} must be a SimpleITK image; got {type(img).__name__}.')
        if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
            raise DataError(
                f'{what} must be a 3D scalar image; got a {img.GetDimension()}D image with '
                f'{img.GetNumberOfComponentsPerPixel()} component(s) of size {img.GetSize()}.'
            )
        if min(img.GetSize()) < 4:
            raise DataError(
                f'{what} is too small to register: size {img.GetSize()}; expected at least 4 voxels along every axis.'
            )
        stats = sitk.MinimumMaximumImageFilter()
        stats.Execute(img)
        if stats.GetMinimum() == stats.GetMaximum():
            raise DataError(
                f'{what} is constant (every voxel is {stats.GetMinimum():g}); there is nothing to register.'
            )
    seed = int(np.random.default_rng(check_random_state(random_state)).integers(1, 2**31 - 1))  # never 0
    fixed = _crop_to_box(sitk.Cast(reference, sitk.sitkFloat32), bbox)
    fixed_mask = None
    if mask is not None:
        fixed_mask = sitk.Resample(
            sitk.Cast(mask != 0, sitk.sitkUInt8), fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0
        )
    mov = coarsen_to_spacing(sitk.Cast(moving, sitk.sitkFloat32), float(min(fixed.GetSpacing())))
    center = np.asarray(fixed.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed.GetSize()]))
    mov_center = np.asarray(mov.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mov.GetSize()]))
    current = np.eye(4)  # fixed (world) -> moving (original), as SimpleITK sees it
    current[:3, 3] = mov_center - center
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(num_threads))
    try:
        for stage in stages:
            tx = _stage_transform(stage, current, center)
            current = _run_stage(
                fixed, mov, tx, fixed_mask, stage=stage, iterations=iterations, metric=metric, seed=seed, name=name
            )
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    _check_result(fixed, fixed_mask, mov, current, name=name)
    T = np.linalg.inv(current)
    fill = float(sitk.GetArrayViewFromImage(moving).min())
    registered = sitk.Resample(moving, reference, sitk_from_matrix(current), sitk.sitkLinear, fill, moving.GetPixelID())
    return registered, T


def _crop_to_box(image, bbox):
    """The part of ``image`` inside the world box ``bbox`` (2, 3); the image itself if None."""
    if bbox is None:
        return image
    box = check_array(bbox, name='bbox', shape=(2, 3))
    corners = np.array([[box[i, 0], box[j, 1], box[k, 2]] for i in (0, 1) for j in (0, 1) for k in (0, 1)])
    idx = np.array([image.TransformPhysicalPointToContinuousIndex(c.tolist()) for c in corners])
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, None)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int), np.array(image.GetSize()) - 1)
    if np.any(hi - lo < 3):
        raise DataError(f'bbox {box.tolist()} overlaps the reference image by less than 4 voxels per axis.')
    return image[int(lo[0]) : int(hi[0]) + 1, int(lo[1]) : int(hi[1]) + 1, int(lo[2]) : int(hi[2]) + 1]


def _stage_transform(stage: str, current: np.ndarray, center: np.ndarray):
    """A SimpleITK transform of the stage's class, initialised to the matrix ``current``."""
    import SimpleITK as sitk

    A, t = current[:3, :3], current[:3, 3]
    if stage == 'translation':
        return sitk.TranslationTransform(3, t.tolist())
    # x -> A (x - c) + c + t'  equals  A x + t  when  t' = t + A c - c
    tprime = (t + A @ center - center).tolist()
    scale = float(np.cbrt(max(np.linalg.det(A), 1e-12)))
    rot = A / scale
    u, _, vt = np.linalg.svd(rot)
    rot = u @ vt  # nearest rotation
    if stage == 'rigid':
        tx = sitk.Euler3DTransform()
        tx.SetCenter(center.tolist())
        tx.SetMatrix(rot.ravel().tolist())
        tx.SetTranslation(tprime)
        return tx
    tx = sitk.Similarity3DTransform()
    tx.SetCenter(center.tolist())
    tx.SetMatrix(rot.ravel().tolist())
    tx.SetScale(scale)
    tx.SetTranslation(tprime)
    return tx


def _levels(spacing: float) -> tuple[list[int], list[float]]:
    """Shrink factors (coarsest about 8 mm voxels) and smoothing sigmas (mm)."""
    coarse, middle = int(round(8.0 / spacing)), int(round(4.0 / spacing))  # noqa: RUF046 - numpy < 2 rounds to a float
    shrinks = sorted({max(1, coarse), max(1, middle), 1}, reverse=True)
    sigmas = [0.5 * f * spacing if f > 1 else 0.0 for f in shrinks]
    return shrinks, sigmas


def _run_stage(fixed, moving, tx, fixed_mask, *, stage, iterations, metric, seed, name) -> np.ndarray:
    import SimpleITK as sitk

    spacing = float(min(fixed.GetSpacing()))
    shrinks, sigmas = _levels(spacing)
    reg = sitk.ImageRegistrationMethod()
    if metric == 'mattes':
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    else:
        reg.SetMetricAsMeanSquares()
    n_vox = float(np.prod(fixed.GetSize()))
    pct = [float(min(1.0, 40000.0 * f**3 / n_vox)) for f in shrinks]
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentagePerLevel(pct, seed)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    step = {'translation': 4.0, 'rigid': 2.0, 'similarity': 1.0}[stage] * max(1.0, spacing / 2)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step,
        minStep=1e-3 * spacing,
        numberOfIterations=int(iterations),
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(shrinks)
    reg.SetSmoothingSigmasPerLevel(sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(tx, inPlace=True)
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = lines[-1] if lines else 'unknown error'
        raise DataError(
            f'Registration of {name} to the reference image failed in the {stage} stage: {why} '
            '(do the image and the reference show the same anatomy, and do they overlap after '
            'centring?).'
        ) from None
    value = reg.GetMetricValue()
    if not np.isfinite(value):
        raise DataError(
            f'Registration of {name} to the reference image failed in the {stage} stage: the metric became {value}.'
        )
    return matrix_from_sitk(tx)


def _check_result(fixed, fixed_mask, moving, current: np.ndarray, *, name: str) -> None:
    """Raise if the final transform has an implausible scale or maps the region outside ``moving``."""
    import SimpleITK as sitk

    det = float(np.linalg.det(current[:3, :3]))
    scale = float(np.cbrt(abs(det))) if np.isfinite(det) else float('nan')
    if not (np.isfinite(scale) and 0.67 <= scale <= 1.5 and det > 0):
        raise DataError(
            f'Registration of {name} to the reference image failed: the result scales the image by '
            f'{scale:.3g} (expected 0.67 to 1.5).'
        )
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    cover = sitk.GetArrayFromImage(sitk.Resample(ones, fixed, sitk_from_matrix(current), sitk.sitkNearestNeighbor, 0))
    region = (sitk.GetArrayViewFromImage(fixed_mask) > 0) if fixed_mask is not None else np.ones(cover.shape, bool)
    frac = float(cover[region].mean()) if region.any() else 0.0
    if frac < 0.5:
        raise DataError(
            f'Registration of {name} to the reference image failed: only {100 * frac:.0f}% of the '
            'reference region falls inside the image after registration (expected at least 50%).'
        )
