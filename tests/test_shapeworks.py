"""ShapeWorks inputs: project files, ShapeWorks-named folders, sides, and the pipeline run from them."""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from deepssm_nb import DataError
from deepssm_nb.data import load_cohort
from deepssm_nb.data.shapeworks import infer_side
from deepssm_nb.io import read_particles, write_image, write_particles

sys.path.insert(0, str(Path(__file__).parent))
import shapeworks_copies as swc


def _mirror_ids(cohort):
    return [cohort.ids('train')[1], cohort.ids('train')[3], cohort.ids('test')[0]]


def _expected(cohort, sid, mirror_ids):
    p = read_particles(cohort[sid].particles)
    return p @ swc.MIRROR if sid in mirror_ids else p


def _load(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        cohort = load_cohort(path, **kw)
    return cohort, [str(w.message) for w in caught]


def test_side_is_read_from_name_tokens():
    assert infer_side('m07_L_femur') == 'L' and infer_side('m07_right_femur') == 'R'
    assert infer_side('m07_femur') is None and infer_side('m07_L_R') is None and infer_side('LR_07') is None


def test_project_gives_the_folder_cohort_with_local_particles_mapped_to_world(smoke_cohort, tmp_path):
    mirror, local = _mirror_ids(smoke_cohort), [smoke_cohort.ids('train')[2]]
    project = swc.swproj(smoke_cohort, tmp_path / 'p', mirror_ids=mirror, tilt=False, local_ids=local)
    cohort, notes = _load(project)
    assert cohort.ids() == smoke_cohort.ids() and cohort.ids('test') == smoke_cohort.ids('test')
    assert [s.side for s in cohort] == ['R' if i in mirror else 'L' for i in cohort.ids()]
    for sid in cohort.ids():
        np.testing.assert_allclose(
            read_particles(cohort[sid].particles), _expected(smoke_cohort, sid, mirror), atol=1e-6
        )
    assert len(notes) == 1 and '1 of 10 subjects have only local particles' in notes[0]
    assert cohort[local[0]].particles.parent == tmp_path / 'p' / 'femur_world_particles'
    assert cohort.mean_mesh == tmp_path / 'p' / 'mean.vtk'


def test_xlsx_project_reads_like_the_swproj(smoke_cohort, tmp_path):
    openpyxl = pytest.importorskip('openpyxl')
    project = swc.swproj(smoke_cohort, tmp_path / 'p', tilt=False)
    rows = json.loads(project.read_text())['data']
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = 'data'
    header = list(rows[0])
    sheet.append(header)
    for row in rows:
        sheet.append([row[h] for h in header])
    book.save(tmp_path / 'p' / 'femur.xlsx')
    a, b = load_cohort(project), load_cohort(tmp_path / 'p' / 'femur.xlsx')
    assert [(s.id, s.image, s.particles, s.mesh, s.split, s.side) for s in a] == [
        (s.id, s.image, s.particles, s.mesh, s.split, s.side) for s in b
    ]


def test_shapeworks_folder_pairs_by_name_and_prefers_world(smoke_cohort, tmp_path):
    mirror = _mirror_ids(smoke_cohort)
    root = swc.shapeworks_folder(smoke_cohort, tmp_path / 'f', mirror_ids=mirror, tilt=False)
    first = smoke_cohort.ids('train')[0]
    write_particles(root / 'particles' / f'{first}_L_femur_local.particles', np.zeros((128, 3)))
    cohort, notes = _load(root)
    assert cohort.ids() == sorted(smoke_cohort.ids()) and sorted(cohort.ids('test')) == smoke_cohort.ids('test')
    assert cohort[first].particles.name == f'{first}_L_femur_world.particles'
    assert cohort[first].image.name == f'{first}_L_femur.nii.gz' and cohort[first].mesh.name == f'{first}_L_femur.vtk'
    assert {s.id for s in cohort if s.side == 'R'} == set(mirror)
    assert notes == [f'"{root}": 1 subjects have both _world and _local particles; the world particles were used.']


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def project(smoke_cohort, tmp_path):
    path = swc.swproj(smoke_cohort, tmp_path / 'p', tilt=False)
    return path, json.loads(path.read_text())


def _rewrite(path, doc):
    path.write_text(json.dumps(doc))
    return path


def _nothing_written(path):
    return not (path.parent / f'{path.stem}_world_particles').exists()


@pytest.mark.bad_input
def test_project_with_missing_files(project):
    path, doc = project
    (path.parent / doc['data'][0]['image_ct']).unlink()
    (path.parent / doc['data'][1]['world_particles_femur']).unlink()
    with pytest.raises(DataError) as err:
        load_cohort(path)
    assert len(err.value.problems) == 2
    assert f'{doc["data"][0]["image_ct"]}" (image of subject' in str(err.value)
    assert f'{doc["data"][1]["world_particles_femur"]}" (particles of subject' in str(err.value)


@pytest.mark.bad_input
def test_project_column_of_the_wrong_length(project):
    path, doc = project
    columns = {k: [row.get(k, '') for row in doc['data']] for k in doc['data'][0]}
    columns['side'] = columns['side'][:7]
    with pytest.raises(DataError, match="column 'side' has 7 values; expected 10 values, one per subject"):
        load_cohort(_rewrite(path, {'data': columns}))


@pytest.mark.bad_input
def test_project_transform_of_the_wrong_length(project):
    path, doc = project
    row = doc['data'][0]
    row['local_particles_femur'] = row.pop('world_particles_femur')
    row['alignment_femur'] = '1 0 0 0 0 1 0 0 0 0 1 0'
    with pytest.raises(DataError, match=r'row 1\), column alignment_femur: expected 16 numbers .* got 12'):
        load_cohort(_rewrite(path, doc))
    assert _nothing_written(path)


@pytest.mark.bad_input
def test_project_particle_counts_differ(project):
    path, doc = project
    write_particles(path.parent / doc['data'][3]['world_particles_femur'], np.zeros((100, 3)))
    with pytest.raises(DataError, match=r'holds 100 particles; the other subjects hold 128'):
        load_cohort(path)


@pytest.mark.bad_input
def test_project_side_with_other_values(project):
    path, doc = project
    doc['data'][2]['side'] = 'middle'
    with pytest.raises(DataError, match=r"side must be one of \['L', 'R'\].*got 'middle'"):
        load_cohort(_rewrite(path, doc))


@pytest.mark.bad_input
def test_project_2d_and_nan_images(project):
    path, doc = project
    nan = np.zeros((6, 6, 6), dtype=np.float32)
    nan[2, 3, 4] = np.nan
    write_image(path.parent / doc['data'][0]['image_ct'], sitk.GetImageFromArray(nan))  # .nrrd keeps NaN
    write_image(path.parent / doc['data'][1]['image_ct'], sitk.Image(8, 8, sitk.sitkInt16))
    with pytest.raises(DataError) as err:
        load_cohort(path)
    assert len(err.value.problems) == 2
    assert 'image holds 1 NaN or infinite voxel(s) of 216' in err.value.problems[0]
    assert 'image must be 3D; got a 2D image of size (8, 8)' in err.value.problems[1]


@pytest.mark.bad_input
def test_project_local_particles_without_transforms(project):
    path, doc = project
    for row in doc['data']:
        row['local_particles_femur'] = row.pop('world_particles_femur')
    with pytest.raises(DataError) as err:
        load_cohort(_rewrite(path, doc))
    assert len(err.value.problems) == 10
    assert (
        'only local particles' in err.value.problems[0]
        and 'neither alignment_femur nor procrustes_femur' in err.value.problems[0]
    )
    assert _nothing_written(path)


@pytest.mark.bad_input
def test_project_with_several_domains_needs_one_named(project):
    path, doc = project
    for row in doc['data']:
        row['shape_pelvis'] = row['shape_femur']
    _rewrite(path, doc)
    with pytest.raises(DataError, match=r"has 2 domains \['femur', 'pelvis'\]; name one with domain="):
        load_cohort(path)
    with pytest.raises(DataError, match=r"no domain 'tibia'; the project has \['femur', 'pelvis'\]"):
        load_cohort(path, domain='tibia')
    assert len(load_cohort(path, domain='femur')) == 10
    from deepssm_nb import get_profile
    from deepssm_nb.data import cohort_from_config

    cfg = get_profile('smoke')  # the config keys do the same
    cfg.data.cohort, cfg.data.domain = str(path), 'femur'
    assert cohort_from_config(cfg.data).ids() == load_cohort(path, domain='femur').ids()


@pytest.mark.bad_input
def test_ambiguous_folder_pairing_names_the_files_and_proposes_a_manifest(smoke_cohort, tmp_path):
    root = swc.shapeworks_folder(smoke_cohort, tmp_path / 'f', tilt=False)
    first = smoke_cohort.ids('train')[0]
    shutil.copy(root / 'images' / f'{first}_L_femur.nii.gz', root / 'images' / f'{first}_L.nrrd')
    with pytest.raises(DataError) as err:
        load_cohort(root)
    assert (
        f'{first}_L_femur_world.particles" pairs with several images: "{first}_L.nrrd", "{first}_L_femur.nii.gz"'
        in err.value.problems[0]
    )
    proposal = err.value.problems[-1].splitlines()
    assert proposal[1] == 'id,image,segmentation,mesh,particles,split,side'
    assert proposal[2].startswith(f'{first},images/{first}_L.nrrd,,meshes/{first}_L_femur.vtk,')
    assert not (root / 'manifest.csv').exists()


# --------------------------------------------------------------------------- grooming and the pipeline


def _cfg(work_dir, cohort):
    from deepssm_nb import get_profile

    cfg = get_profile('smoke', work_dir=str(work_dir))
    cfg.groom.processes = 1
    cfg.augment.processes = 1
    cfg.data.cohort = str(cohort)
    return cfg


@pytest.mark.slow
def test_grooming_tilted_flipped_anisotropic_mirrored_images_gives_the_same_world_particles(smoke_cohort, tmp_path):
    """Measured: at most 0.43 mm mean difference per subject (the smoke grid is 4 mm)."""
    from deepssm_nb.groom import run_grooming
    from deepssm_nb.registration import apply_transform

    mirror = _mirror_ids(smoke_cohort)
    project = swc.swproj(smoke_cohort, tmp_path / 'p', mirror_ids=mirror, tilt=True)
    image = sitk.ReadImage(str(load_cohort(project)[0].image))
    assert image.GetPixelID() == sitk.sitkInt16 and image.GetSpacing() == pytest.approx((1.7, 2.1, 2.6))
    a = run_grooming(_cfg(tmp_path / 'a', smoke_cohort.root), smoke_cohort, progress=False)
    b = run_grooming(_cfg(tmp_path / 'b', project), progress=False)
    assert b.info['reference_side'] == 'L'
    diff = np.linalg.norm(a.particles() - b.particles(), axis=2).mean(axis=1)
    assert diff.max() < 0.6
    assert b.info['registration_error']['mean_mm'] < 1.2
    cohort = load_cohort(project)
    for row, s in zip(b.info['subjects'], b.subjects):
        assert row['reflected'] == (s.id in mirror) and row['source_image'] == str(cohort[s.id].image)
        np.testing.assert_allclose(
            apply_transform(s.transform, read_particles(cohort[s.id].particles)), read_particles(s.particles), atol=1e-6
        )


@pytest.fixture(scope='module')
def smoke_runs(smoke_cohort, tmp_path_factory):
    """Test-set surface distances of the smoke pipeline on the cohort and on three ShapeWorks copies of it."""
    from deepssm_nb.analyze import run_analysis
    from deepssm_nb.pipeline import run_pipeline

    root = tmp_path_factory.mktemp('shapeworks_runs')
    mirror = _mirror_ids(smoke_cohort)
    formats, swc.FORMATS = swc.FORMATS, ('.nrrd',)
    try:
        sources = {
            'cohort': smoke_cohort.root,
            'project_mirrored': swc.swproj(smoke_cohort, root / 'p', mirror_ids=mirror, tilt=False),
            'folder_mirrored': swc.shapeworks_folder(smoke_cohort, root / 'f', mirror_ids=mirror, tilt=False),
        }
    finally:
        swc.FORMATS = formats
    sources['folder_tilted'] = swc.shapeworks_folder(smoke_cohort, root / 't', mirror_ids=mirror, tilt=True)
    out = {'configs': {}, 'sources': sources}
    for name, src in sources.items():
        cfg = _cfg(root / f'work_{name}', src)
        run_pipeline(cfg, until='predict', verbose=False)
        out[name] = run_analysis(cfg, truth='mesh', progress=False).summary
        out['configs'][name] = cfg
    return out


@pytest.mark.slow
def test_mirrored_project_and_folder_give_the_cohort_accuracy(smoke_runs):
    """Left femurs turned into right ones (image, particles, meshes) and reflected back by grooming.

    Measured: 0.681 mm on the cohort; 0.681 mm mirrored (the reflection is exact, only the position moves).
    """
    ref = smoke_runs['cohort']['mean_surface_distance_mm']
    for name in ('project_mirrored', 'folder_mirrored'):
        assert smoke_runs[name]['mean_surface_distance_mm'] == pytest.approx(ref, abs=0.05)
        assert smoke_runs[name]['mean_shape_baseline_mm'] == pytest.approx(
            smoke_runs['cohort']['mean_shape_baseline_mm'], abs=0.05
        )


@pytest.mark.slow
def test_tilted_anisotropic_int16_folder_gives_the_cohort_accuracy_within_the_smoke_noise(smoke_runs):
    """Resampled inputs change the 2-epoch smoke network's predictions more than the inputs change.

    Measured: 0.681 mm on the cohort, 0.863 mm tilted; the mean-shape baseline, which does not depend on the
    network, agrees within 0.01 mm (0.737 and 0.730 mm).
    """
    ref = smoke_runs['cohort']
    tilted = smoke_runs['folder_tilted']
    assert tilted['mean_shape_baseline_mm'] == pytest.approx(ref['mean_shape_baseline_mm'], abs=0.05)
    assert tilted['mean_surface_distance_mm'] == pytest.approx(ref['mean_surface_distance_mm'], abs=0.3)


@pytest.mark.slow
def test_the_same_model_predicts_tilted_anisotropic_mirrored_int16_test_images_like_the_originals(smoke_runs, tmp_path):
    """Reader, registration and prediction of rewritten test images, with one trained model.

    The model is the one trained on the mirrored project (its grooming knows the sides); it predicts the project's
    test images (as written) and the same subjects tilted, flipped, anisotropic and int16, in other formats, one of
    them a right femur. Training is left out on purpose: the 2-epoch smoke network moves more with a retraining than
    the inputs do (see the test above). Measured: 0.745 mm as written, 0.733 mm rewritten; the particles
    moved by 0.36 and 0.39 mm on average (the smoke grid is 4 mm).
    """
    from deepssm_nb.predict import predict_image
    from deepssm_nb.surface import read_surface, symmetric_surface_distance, warp_mesh

    cfg = smoke_runs['configs']['project_mirrored']
    project = load_cohort(smoke_runs['sources']['project_mirrored'])
    tilted = load_cohort(smoke_runs['sources']['folder_tilted'])
    mean_mesh, mean_particles = read_surface(project.mean_mesh), read_particles(project.mean_particles)
    distances = {'as written': [], 'rewritten': []}
    moved, sides = [], []
    for sid in project.ids('test'):
        source = Path(tilted[sid].image)
        assert sitk.ReadImage(str(source)).GetPixelID() == sitk.sitkInt16
        sides.append(tilted[sid].side)
        points = {
            'as written': predict_image(project[sid].image, cfg, out_dir=tmp_path / 'a', verbose=False),
            'rewritten': predict_image(source, cfg, out_dir=tmp_path / 'b', verbose=False),
        }
        truth = read_surface(tilted[sid].mesh)  # the same physical surface as the project's
        for key, p in points.items():
            distances[key].append(
                symmetric_surface_distance(truth, warp_mesh(mean_mesh, mean_particles, p))[2]['symmetric']['mean']
            )
        moved.append(np.linalg.norm(points['as written'] - points['rewritten'], axis=1).mean())
    assert sorted(sides) == ['L', 'R']
    assert np.mean(distances['rewritten']) == pytest.approx(np.mean(distances['as written']), abs=0.05)
    assert max(moved) < 1.0
