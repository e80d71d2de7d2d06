"""Legacy VTK mesh files written without VTK open in PyVista, and back."""

from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv

from deepssm_nb import DataError
from deepssm_nb.meshio import read_mesh, write_mesh


def test_written_mesh_opens_in_pyvista_and_round_trips(tmp_path):
    sphere = pv.Sphere(radius=7.0, center=(1.0, -2.0, 3.0)).triangulate()
    v = np.asarray(sphere.points)
    f = np.asarray(sphere.faces).reshape(-1, 4)[:, 1:]
    dist = np.linalg.norm(v, axis=1)
    path = write_mesh(tmp_path / 's.vtk', v, f, {'distance': dist})
    mesh = pv.read(str(path))
    assert mesh.n_points == len(v) and mesh.n_cells == len(f)
    np.testing.assert_allclose(mesh.points, v, atol=1e-5)
    np.testing.assert_allclose(mesh.point_data['distance'], dist, rtol=1e-6)
    assert abs(mesh.volume - sphere.volume) < 1e-3 * sphere.volume
    v2, f2, data = read_mesh(path)
    np.testing.assert_allclose(v2, v, atol=1e-5)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_allclose(data['distance'], dist, rtol=1e-6)


def test_other_formats_go_through_pyvista(tmp_path):
    cube = pv.Cube().triangulate()
    cube.save(str(tmp_path / 'c.ply'))
    v, f, _ = read_mesh(tmp_path / 'c.ply')
    assert v.shape == (cube.n_points, 3) and f.shape == (12, 3)


@pytest.mark.bad_input
def test_bad_meshes(tmp_path):
    with pytest.raises(DataError, match=r'faces for ".*bad\.vtk" must be \(F, 3\) indices into 3 vertices'):
        write_mesh(tmp_path / 'bad.vtk', np.eye(3), np.array([[0, 1, 5]]))
    assert not (tmp_path / 'bad.vtk').exists()
    with pytest.raises(FileNotFoundError, match='none.vtk'):
        read_mesh(tmp_path / 'none.vtk')
    (tmp_path / 'junk.stl').write_text('not a mesh')
    with pytest.raises(DataError, match=r'junk\.stl'):
        read_mesh(tmp_path / 'junk.stl')
