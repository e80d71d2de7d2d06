"""Derive per-subject femur and pelvis triangle meshes from the LLP26 model.

The LLP26 lower-limb shape model ships in the PyPI package
``musculoskeletal-models==0.2.4`` (Auckland Bioengineering Institute,
MPL-2.0). It consists of a rigid-aligned principal component model
(``shape_models/LLP26_rigid.pc``) of the nodal parameters of four
piecewise-polynomial surface meshes (pelvis, left femur, left patella, left
tibia/fibula; ``atlas_meshes/*.geof|.ens|.mesh``). The principal component
model stores, for each of its 26 adult training subjects, the projection of
that subject onto the modes, so the 26 real subjects are reconstructed
exactly as ``mean + modes @ projectedWeights[:, i]``.

This script reconstructs the nodal parameters of every subject, evaluates the
femur and pelvis surfaces on a regular grid of element coordinates,
triangulates the grid, merges the vertices shared by neighbouring elements
(the merge is decided once on the mean shape and then checked on every
subject, so all subjects share one face array and vertex ``i`` corresponds
across subjects), checks the result and writes
``deepssm_nb/data/llp26_meshes.npz``.

The surface evaluation uses the ``gias3.fieldwork`` package. gias3 is not a
dependency of ``deepssm_nb``; install it in a throwaway virtual environment
and run this script from the repository root::

    python3 -m venv /tmp/giasenv
    /tmp/giasenv/bin/pip install gias3.fieldwork==3.0.1 gias3.common==3.0.0 \\
        musculoskeletal-models==0.2.4
    /tmp/giasenv/bin/python tools/derive_llp26.py

Options: ``--models-dir DIR`` reads the model files from an unpacked wheel
(the folder that holds ``shape_models/`` and ``atlas_meshes/``) instead of
the installed ``musculoskeletal.models`` package; ``--out PATH`` changes the
output file.

gias3 3.0.x still calls NumPy functions through the SciPy namespace
(``scipy.dot``, ``scipy.array``, ``scipy.sin``, ...), which current SciPy no
longer provides. Before importing gias3, this script therefore sets every
such missing name on the ``scipy`` module to the NumPy function of the same
name (see :func:`patch_scipy_namespace`). This only affects the process
running the script.

Contents of the output (``np.savez_compressed``; everything below is checked
or measured before writing, and printed):

* ``femur_vertices`` float32 (26, Vf, 3), ``femur_faces`` int32 (Ff, 3):
  left femur. One closed, consistently oriented, genus-0 surface without
  duplicate vertices. Vertices ``[0, 1033)`` are those of the femoral head
  elements.
* ``pelvis_vertices`` float32 (26, Vp, 3), ``pelvis_faces`` int32 (Fp, 3):
  pelvis as three closed, consistently oriented surfaces stored as
  contiguous vertex blocks: right hemipelvis, left hemipelvis (each genus 1,
  the hole being the obturator foramen), sacrum (genus 0).
* ``subject_ids`` (26,) str: ``llp26_00`` ... ``llp26_25``, the columns of
  ``projectedWeights`` in order.

Faces are shared by all subjects and wound so that normals point outwards
(positive signed volume). Coordinates are in millimetres, in the frame of the
shape model: +x is the subject's left (lateral for the left femur), +y is
posterior, +z is superior.

Hip joint: the femur is left exactly where the model puts it. The model does
not keep the hip assembled: the centre of the sphere fitted to the femoral
head lies 1.8-26.5 mm from the centre of the sphere fitted to the left
acetabulum, and the head cuts into the pelvis in most subjects. Because that
distance exceeds :data:`MAX_HIP_GAP_MM`, each subject's whole pelvis is
translated (no rotation) so that the two centres coincide. Neither surface
is exactly spherical, so the head still overlaps the cup by up to about
5 mm (median about 2.6 mm).
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

# Discretisation (grid points per element edge) for each bone. The femur uses
# quartic elements (nodes at xi = k/4) and a few quartic-cubic ones, so 13
# points per edge (xi = k/12) puts a vertex on every element node. The pelvis
# (cubic elements) is sampled more coarsely.
FEMUR_GRID = 13
PELVIS_GRID = 5

# Bones of the shape model, in the order in which their nodes are
# concatenated in the principal component model (checked against the mean).
BONE_FILES = {
    'pelvis': (
        'pelvis_combined_cubic_mean_rigid_LLP26.geof',
        'pelvis_combined_cubic_flat.ens',
        'pelvis_combined_cubic_flat.mesh',
    ),
    'femur': ('femur_left_mean_rigid_LLP26.geof', 'femur_left_quartic_flat.ens', 'femur_left_quartic_flat.mesh'),
    'patella': ('patella_left_mean_rigid_LLP26.geof', 'patella_11_left.ens', 'patella_11_left.mesh'),
    'tibiafibula': (
        'tibia_fibula_cubic_left_mean_rigid_LLP26.geof',
        'tibia_fibula_left_cubic_flat.ens',
        'tibia_fibula_left_cubic_flat.mesh',
    ),
}
SHAPE_MODEL_FILE = 'LLP26_rigid.pc'
N_SUBJECTS = 26

# Elements (numbers of the flat meshes) that cover the femoral head, and the
# left acetabulum with its rim. The spherical parts used for the hip-joint
# check are selected inside these on the mean shape, starting from the seed
# elements (see spherical_patch()).
FEMUR_HEAD_ELEMENTS = (0, 1, 2, 3, 4, 5, 6, 7)
FEMUR_HEAD_SEED = (0, 3, 5, 7)
LEFT_ACETABULUM_ELEMENTS = (108, 109, 110, 111, 112, 113, 114, 115)
LEFT_ACETABULUM_SEED = (109, 111, 113)
# Fieldwork node of the femur at the lesser trochanter (a vertex of the
# output mesh because FEMUR_GRID puts vertices on all nodes).
FEMUR_LESSER_TROCHANTER_NODE = 276
# Femur elements along the diaphysis, used for the shaft axis.
FEMUR_SHAFT_ELEMENTS = (23, 24, 25, 40, 41, 42)

# Largest accepted distance between the femoral head centre and the
# acetabulum centre before the pelvis is moved onto the femoral head.
MAX_HIP_GAP_MM = 5.0

# Raw grid points closer than this on the mean shape are merged.
MERGE_TOL_MM = 1e-6

_SCIPY_ALIASES = (
    'add',
    'array',
    'cos',
    'dot',
    'hstack',
    'linspace',
    'mod',
    'multiply',
    'newaxis',
    'pi',
    'sin',
    'sqrt',
    'sum',
)


def patch_scipy_namespace() -> None:
    """Provide the NumPy aliases that gias3 expects in the SciPy namespace.

    Sets ``scipy.<name>`` to ``numpy.<name>`` for each name in
    ``_SCIPY_ALIASES`` that the installed SciPy does not define.
    """
    import scipy

    for name in _SCIPY_ALIASES:
        if not hasattr(scipy, name):
            setattr(scipy, name, getattr(np, name))


def find_models_dir(models_dir: str | None) -> Path:
    """Locate the folder holding ``shape_models/`` and ``atlas_meshes/``.

    Args:
        models_dir: Explicit folder, or None to use the installed
            ``musculoskeletal.models`` package.

    Returns:
        The model folder.
    """
    if models_dir is None:
        import musculoskeletal.models as mm

        root = Path(mm.__file__).resolve().parent
    else:
        root = Path(models_dir)
    for sub in ('shape_models', 'atlas_meshes'):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f'{root / sub} not found')
    return root


def read_node_coordinates(geof_path: Path) -> np.ndarray:
    """Read the nodal coordinates of a fieldwork ``.geof`` file.

    Args:
        geof_path: Path of the JSON ``.geof`` file.

    Returns:
        Array (n_nodes, 3), nodes in file order.
    """
    params = json.loads(geof_path.read_text())['field_parameters']
    keys = sorted(params, key=lambda k: int(k.split()[-1]))
    return np.array([[float(params[k][f'dim {d}']) for d in range(3)] for k in keys])


def reconstruct_subjects(root: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Reconstruct the nodal coordinates of the 26 training subjects.

    The principal component model stores its parameter vector in block
    layout (all x, then all y, then all z). ``projectedWeights`` has one
    column per subject and one row per mode; the rows are centred over the
    subjects and their sample variances equal ``weights`` (the eigenvalues),
    which this function checks.

    Args:
        root: Model folder (see :func:`find_models_dir`).

    Returns:
        Per-bone node coordinates, each (26, n_nodes, 3), and a dict of
        facts about the model for the summary.
    """
    with open(root / 'shape_models' / SHAPE_MODEL_FILE, 'rb') as fh:
        pc = pickle.load(fh, encoding='latin1')
    mean = np.asarray(pc['mean'], dtype=float)
    modes = np.asarray(pc['modes'], dtype=float)
    eigvals = np.asarray(pc['weights'], dtype=float)
    proj = np.asarray(pc['projectedWeights'], dtype=float)
    if proj.shape != (modes.shape[1], N_SUBJECTS):
        raise ValueError(f'unexpected projectedWeights shape {proj.shape}')
    if not np.allclose(proj.mean(axis=1), 0.0, atol=1e-6 * np.abs(proj).max()):
        raise ValueError('projectedWeights rows are not centred over subjects')
    if not np.allclose(proj.var(axis=1, ddof=1), eigvals, rtol=1e-6, atol=1e-6 * eigvals.max()):
        raise ValueError('weights are not the variances of projectedWeights')

    params = mean[:, None] + modes @ proj  # (9675, 26)
    nodes = params.reshape(3, -1, N_SUBJECTS).transpose(2, 1, 0)
    mean_nodes = mean.reshape(3, -1).T

    per_bone = {}
    start = 0
    for bone, (geof, _, _) in BONE_FILES.items():
        atlas = read_node_coordinates(root / 'atlas_meshes' / geof)
        stop = start + len(atlas)
        err = np.abs(mean_nodes[start:stop] - atlas).max()
        if err > 1e-6:
            raise ValueError(f'{bone}: mean nodes differ from {geof} by {err}')
        per_bone[bone] = nodes[:, start:stop]
        start = stop
    if start != len(mean_nodes):
        raise ValueError('node counts of the bones do not add up')
    info = {'n_nodes': len(mean_nodes), 'n_modes': modes.shape[1]}
    return per_bone, info


class SurfaceSampler:
    """Evaluate and triangulate one fieldwork surface on a regular grid.

    Args:
        root: Model folder.
        bone: Key of :data:`BONE_FILES`.
        grid: Number of grid points along each element edge.
    """

    def __init__(self, root: Path, bone: str, grid: int) -> None:
        from gias3.fieldwork.field import geometric_field

        files = [str(root / 'atlas_meshes' / f) for f in BONE_FILES[bone]]
        self.gf = geometric_field.load_geometric_field(*files)
        self.grid = [grid, grid]
        self.gf.flatten_ensemble_field_function()
        faces = np.asarray(self.gf.triangulator._triangulate(self.grid))
        # gias3 builds the per-element triangles clockwise; reverse them.
        self.raw_faces = faces[:, ::-1].astype(np.int64)
        elements = self.gf.ensemble_field_function.mesh.get_true_elements()
        numbers = sorted(self.gf.ensemble_field_function.mesh.elements)
        if len(numbers) != len(elements):
            raise ValueError('nested meshes are not supported')
        counts = [grid * grid if 'quad' in e.type else grid * (grid + 1) // 2 for e in elements]
        self.raw_element = np.repeat(numbers, counts)

    def evaluate(self, nodes: np.ndarray) -> np.ndarray:
        """Evaluate the raw (unmerged) grid points for one shape.

        Args:
            nodes: Node coordinates (n_nodes, 3).

        Returns:
            Raw grid points (n_raw, 3), element by element.
        """
        self.gf.field_parameters = np.ascontiguousarray(nodes.T[:, :, None])
        points = np.asarray(self.gf.evaluate_geometric_field(self.grid)).T
        if len(points) != len(self.raw_element):
            raise ValueError('unexpected number of grid points')
        return points


def merge_map(points: np.ndarray, tol: float) -> np.ndarray:
    """Group coincident points.

    Args:
        points: Points (n, 3).
        tol: Points closer than this are merged.

    Returns:
        For each point the index of its merged vertex; merged vertices are
        numbered in order of first appearance.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pairs = cKDTree(points).query_pairs(tol, output_type='ndarray')
    n = len(points)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n)
    np.minimum.at(first, labels, np.arange(n))
    order = np.argsort(first)
    renumber = np.empty_like(order)
    renumber[order] = np.arange(len(order))
    return renumber[labels]


def edge_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count undirected and directed uses of every edge.

    Args:
        faces: Triangles (m, 3).

    Returns:
        Unique undirected edges (k, 2), the number of faces using each, and
        the largest number of times any directed edge occurs.
    """
    directed = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    _, dir_counts = np.unique(directed, axis=0, return_counts=True)
    undirected = np.sort(directed, axis=1)
    edges, counts = np.unique(undirected, axis=0, return_counts=True)
    return edges, counts, dir_counts.max()


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed triangle mesh (positive outwards)."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum('ij,ij->i', a, np.cross(b, c)).sum() / 6.0)


def components(n_vertices: int, faces: np.ndarray) -> np.ndarray:
    """Label the connected components of a mesh by vertex."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    e = faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    return connected_components(graph, directed=False)[1]


def topology_report(vertices: np.ndarray, faces: np.ndarray) -> list[dict]:
    """Check closedness, orientation and genus of each component.

    Args:
        vertices: Vertices (n, 3) of one shape.
        faces: Triangles (m, 3).

    Returns:
        One dict per connected component with its vertex range, face
        count, whether it is closed (every edge in exactly two faces),
        consistently oriented, its genus and signed volume.
    """
    labels = components(len(vertices), faces)
    report = []
    for comp in np.unique(labels):
        vidx = np.flatnonzero(labels == comp)
        f = faces[labels[faces[:, 0]] == comp]
        edges, counts, max_dir = edge_counts(f)
        euler = len(vidx) - len(edges) + len(f)
        report.append(
            {
                'vertices': (int(vidx.min()), int(vidx.max()) + 1),
                'contiguous': bool(vidx.max() - vidx.min() + 1 == len(vidx)),
                'faces': len(f),
                'closed': bool(np.all(counts == 2)),
                'oriented': bool(max_dir == 1),
                'genus': (2 - euler) / 2,
                'volume': signed_volume(vertices, f),
            }
        )
    return report


def build_bone(sampler: SurfaceSampler, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Evaluate, merge and triangulate one bone for all subjects.

    Args:
        sampler: Surface sampler of the bone.
        nodes: Node coordinates of all subjects (26, n_nodes, 3).

    Returns:
        Vertices (26, n_vertices, 3) float64, shared faces (m, 3) and the
        element number of each vertex (the element of its first grid point).
    """
    raw = np.stack([sampler.evaluate(x) for x in nodes])
    mapping = merge_map(sampler.evaluate(nodes.mean(axis=0)), MERGE_TOL_MM)
    n_vert = mapping.max() + 1

    # The merge must hold for every subject, not only for the mean.
    # rep: the first raw grid point of each merged vertex.
    rep = np.full(n_vert, len(mapping), dtype=np.int64)
    np.minimum.at(rep, mapping, np.arange(len(mapping)))
    for s, pts in enumerate(raw):
        spread = np.abs(pts - pts[rep[mapping]]).max()
        if spread > 1e-6:
            raise ValueError(f'subject {s}: merged points differ by {spread}')
    vertices = raw[:, rep]

    faces = mapping[sampler.raw_faces]
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[keep]
    if signed_volume(vertices.mean(axis=0), faces) < 0:
        faces = faces[:, ::-1]
    return vertices, np.ascontiguousarray(faces), sampler.raw_element[rep]


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Least-squares sphere through points.

    Solves the linear form ``|p|^2 = 2 c.p + (r^2 - |c|^2)`` and reports the
    RMS radial residual.

    Args:
        points: Points (n, 3).

    Returns:
        Centre (3,), radius and RMS radial residual.
    """
    a = np.hstack([2.0 * points, np.ones((len(points), 1))])
    b = (points**2).sum(axis=1)
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    centre = sol[:3]
    radius = float(np.sqrt(sol[3] + centre @ centre))
    resid = np.linalg.norm(points - centre, axis=1) - radius
    return centre, radius, float(np.sqrt(np.mean(resid**2)))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    face_n = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def spherical_patch(
    vertices: np.ndarray,
    faces: np.ndarray,
    element_of: np.ndarray,
    candidates: tuple[int, ...],
    seed: tuple[int, ...],
    concave: bool,
    band_mm: float,
    iterations: int = 10,
) -> np.ndarray:
    """Select the vertices of a near-spherical surface patch.

    Starting from a sphere fitted to the seed elements, keeps the vertices
    of the candidate elements that lie within ``band_mm`` of the sphere and
    whose normal points away from (convex patch) or towards (concave patch)
    its centre, refits, and repeats.

    Args:
        vertices: Vertices (n, 3) of one shape (the mean).
        faces: Triangles (m, 3).
        element_of: Element number of each vertex.
        candidates: Elements the patch may use.
        seed: Elements of the first fit.
        concave: True for a cup (normals towards the centre).
        band_mm: Accepted radial distance from the fitted sphere.
        iterations: Number of select-and-refit rounds.

    Returns:
        Boolean mask over the vertices.
    """
    normals = vertex_normals(vertices, faces)
    cand = np.isin(element_of, candidates)
    mask = np.isin(element_of, seed)
    for _ in range(iterations):
        centre, radius, _ = fit_sphere(vertices[mask])
        radial = vertices - centre
        dist = np.linalg.norm(radial, axis=1)
        cos = (normals * radial).sum(axis=1) / dist
        if concave:
            cos = -cos
        new = cand & (cos > 0.8) & (np.abs(dist - radius) < band_mm)
        if np.array_equal(new, mask):
            break
        mask = new
    return mask


def rigid_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate and translate ``source`` onto ``target`` (least squares)."""
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    u, _, vt = np.linalg.svd((source - cs).T @ (target - ct))
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return (source - cs) @ rot + ct


def per_vertex_rms_sd(shapes: np.ndarray, iterations: int = 10) -> float:
    """RMS over vertices of the per-vertex SD after rigid Procrustes."""
    aligned = shapes.copy()
    for _ in range(iterations):
        ref = aligned.mean(axis=0)
        aligned = np.stack([rigid_align(s, ref) for s in aligned])
    dev = aligned - aligned.mean(axis=0)
    return float(np.sqrt((dev**2).sum(axis=2).mean()))


def penetration_depth(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray) -> float:
    """Approximate depth of the deepest point inside a closed surface.

    Uses the signed distance along the normal of the nearest vertex; points
    are assumed to lie near the surface (a few millimetres).

    Args:
        vertices: Surface vertices (n, 3).
        faces: Surface triangles (m, 3).
        points: Query points (k, 3).

    Returns:
        Largest depth in mm (0 if no point is inside).
    """
    from scipy.spatial import cKDTree

    normals = vertex_normals(vertices, faces)
    _, idx = cKDTree(vertices).query(points)
    signed = ((points - vertices[idx]) * normals[idx]).sum(axis=1)
    return float(max(0.0, -signed.min()))


def check_bone(name: str, vertices: np.ndarray, faces: np.ndarray, single_genus0: bool) -> None:
    """Check a bone's meshes for all subjects and print a summary.

    Every connected component must be closed (each edge in exactly two
    faces), consistently oriented and enclose a positive volume; vertices
    must be distinct and faces non-degenerate, for every subject.

    Args:
        name: Bone name for messages.
        vertices: Vertices (26, n, 3).
        faces: Shared triangles (m, 3).
        single_genus0: Also require one component of genus 0.

    Raises:
        ValueError: If a check fails.
    """
    from scipy.spatial import cKDTree

    reports = [topology_report(v, faces) for v in vertices]
    min_sep = min(cKDTree(v).query(v, k=2)[0][:, 1].min() for v in vertices)
    min_area = min(
        np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1).min() / 2
        for v in vertices
    )
    print(
        f'{name}: {vertices.shape[1]} vertices, {len(faces)} faces; '
        f'closest vertex pair {min_sep:.3f} mm, smallest face '
        f'{min_area:.4f} mm^2 (over all subjects)'
    )
    for k, comp in enumerate(reports[0]):
        vols = np.array([r[k]['volume'] for r in reports]) / 1e3
        print(
            f'  component {k}: vertices [{comp["vertices"][0]}, '
            f'{comp["vertices"][1]}), {comp["faces"]} faces, genus '
            f'{comp["genus"]:g}, volume {vols.min():.1f}-{vols.max():.1f} '
            'cm^3'
        )
    if any(len(r) != len(reports[0]) for r in reports):
        raise ValueError(f'{name}: component count differs between subjects')
    bad = [
        (s, c)
        for s, r in enumerate(reports)
        for c in r
        if not (c['closed'] and c['oriented'] and c['contiguous'] and c['volume'] > 0)
    ]
    if bad:
        raise ValueError(f'{name}: open, unoriented or inverted: {bad[:3]}')
    if single_genus0 and not all(len(r) == 1 and r[0]['genus'] == 0 for r in reports):
        raise ValueError(f'{name}: not a single genus-0 surface')
    if min_sep < 1e-3 or min_area < 1e-6:
        raise ValueError(f'{name}: duplicate vertices or degenerate faces')
    print('  every component closed, consistently oriented, outward, for all subjects')


def main(argv: list[str] | None = None) -> int:
    """Derive the meshes, check them, print a summary and write the file.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit status.
    """
    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models-dir', default=None)
    parser.add_argument('--out', default=str(repo / 'deepssm_nb' / 'data' / 'llp26_meshes.npz'))
    args = parser.parse_args(argv)
    t0 = time.time()

    patch_scipy_namespace()
    root = find_models_dir(args.models_dir)
    nodes, info = reconstruct_subjects(root)
    print(
        f'shape model: {info["n_nodes"]} nodes, {info["n_modes"]} modes; '
        + ', '.join(f'{b} {v.shape[1]}' for b, v in nodes.items())
    )

    femur_v, femur_f, femur_el = build_bone(SurfaceSampler(root, 'femur', FEMUR_GRID), nodes['femur'])
    pelvis_v, pelvis_f, pelvis_el = build_bone(SurfaceSampler(root, 'pelvis', PELVIS_GRID), nodes['pelvis'])
    check_bone('femur', femur_v, femur_f, single_genus0=True)
    check_bone('pelvis', pelvis_v, pelvis_f, single_genus0=False)

    n_head = int(np.isin(femur_el, FEMUR_HEAD_ELEMENTS).sum())
    if not np.isin(femur_el[:n_head], FEMUR_HEAD_ELEMENTS).all():
        raise ValueError('femoral head vertices are not the first block')
    print(f'femur vertices [0, {n_head}) belong to the head elements')

    # Hip joint: sphere fits to the femoral head and the left acetabulum
    # (vertex sets chosen once on the mean shape, used for every subject).
    head = spherical_patch(
        femur_v.mean(axis=0), femur_f, femur_el, FEMUR_HEAD_ELEMENTS, FEMUR_HEAD_SEED, concave=False, band_mm=1.5
    )
    cup = spherical_patch(
        pelvis_v.mean(axis=0),
        pelvis_f,
        pelvis_el,
        LEFT_ACETABULUM_ELEMENTS,
        LEFT_ACETABULUM_SEED,
        concave=True,
        band_mm=5.0,
    )
    cup_region = np.isin(pelvis_el, LEFT_ACETABULUM_ELEMENTS)
    head_fit = [fit_sphere(v[head]) for v in femur_v]
    cup_fit = [fit_sphere(v[cup]) for v in pelvis_v]
    head_c = np.array([f[0] for f in head_fit])
    gap = head_c - np.array([f[0] for f in cup_fit])
    dist = np.linalg.norm(gap, axis=1)
    for label, fits, mask in (('femoral head', head_fit, head), ('left acetabulum', cup_fit, cup)):
        radii = [f[1] for f in fits]
        print(
            f'{label} sphere ({mask.sum()} vertices): radius '
            f'{min(radii):.1f}-{max(radii):.1f} mm, RMS residual <= '
            f'{max(f[2] for f in fits):.2f} mm'
        )
    print(f'head centre to acetabulum centre: {dist.min():.1f}-{dist.max():.1f} mm (median {np.median(dist):.1f})')
    depth = [penetration_depth(f, femur_f, p[cup_region]) for f, p in zip(femur_v, pelvis_v)]
    print(
        f'  deepest acetabulum vertex inside the femur, as in the model: '
        f'{min(depth):.1f}-{max(depth):.1f} mm '
        f'(> 0.5 mm in {sum(d > 0.5 for d in depth)} subjects)'
    )
    if dist.max() > MAX_HIP_GAP_MM:
        # The model's subjects do not all have the hip assembled: move each
        # pelvis (translation only) so that its acetabulum centre falls on
        # the femoral head centre.
        pelvis_v = pelvis_v + gap[:, None, :]
        depth = [penetration_depth(f, femur_f, p[cup_region]) for f, p in zip(femur_v, pelvis_v)]
        print(
            '  hip joint not assembled in the model: each pelvis was '
            'translated so that the centres coincide; deepest acetabulum '
            f'vertex inside the femur now {min(depth):.1f}-'
            f'{max(depth):.1f} mm (median {np.median(depth):.1f})'
        )

    # Proximal femur landmarks for placing a cutting plane.
    atlas = read_node_coordinates(root / 'atlas_meshes' / BONE_FILES['femur'][0])
    lt_vertex = int(
        np.argmin(
            np.linalg.norm(femur_v.mean(axis=0) - nodes['femur'].mean(axis=0)[FEMUR_LESSER_TROCHANTER_NODE], axis=1)
        )
    )
    lt_err = np.abs(femur_v[:, lt_vertex] - nodes['femur'][:, FEMUR_LESSER_TROCHANTER_NODE]).max()
    shaft = np.isin(femur_el, FEMUR_SHAFT_ELEMENTS)
    below_z, below_axis, tilt = [], [], []
    for v, c in zip(femur_v, head_c):
        pts = v[shaft] - v[shaft].mean(axis=0)
        axis = np.linalg.svd(pts, full_matrices=False)[2][0]
        axis = axis if axis[2] > 0 else -axis
        below_z.append(c[2] - v[lt_vertex, 2])
        below_axis.append((c - v[lt_vertex]) @ axis)
        tilt.append(np.degrees(np.arccos(axis[2])))
    print(
        f'lesser trochanter (node {FEMUR_LESSER_TROCHANTER_NODE} = vertex '
        f'{lt_vertex}, error {lt_err:.1e} mm, atlas z '
        f'{atlas[FEMUR_LESSER_TROCHANTER_NODE, 2]:.1f}): '
        f'{min(below_z):.1f}-{max(below_z):.1f} mm below the head centre '
        f'along z, {min(below_axis):.1f}-{max(below_axis):.1f} mm along the '
        f'shaft axis (shaft tilt from z {min(tilt):.1f}-{max(tilt):.1f} '
        'deg)'
    )

    length = femur_v[:, :, 2].max(axis=1) - femur_v[:, :, 2].min(axis=1)
    print(f'femur length (z extent): {length.min():.1f}-{length.max():.1f} mm')
    print(f'femur per-vertex RMS SD after rigid alignment: {per_vertex_rms_sd(femur_v):.2f} mm')

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        femur_vertices=femur_v.astype(np.float32),
        femur_faces=femur_f.astype(np.int32),
        pelvis_vertices=pelvis_v.astype(np.float32),
        pelvis_faces=pelvis_f.astype(np.int32),
        subject_ids=np.array([f'llp26_{i:02d}' for i in range(N_SUBJECTS)]),
    )
    print(f'wrote {out} ({out.stat().st_size / 1e6:.2f} MB) in {time.time() - t0:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
