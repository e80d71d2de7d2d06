"""The accuracy benchmark's folds and pooled figures, on one fold of the smoke cohort."""

from __future__ import annotations

import math

import pytest
from bench_modules import load_bench

pytestmark = pytest.mark.slow


def _bench():
    return load_bench('accuracy')


def test_folds_cover_every_subject_once():
    bench = _bench()
    ids = [f's{i:02d}' for i in range(26)]
    folds = bench.make_folds(ids, 7)
    assert sorted(i for f in folds for i in f) == ids
    assert sorted(len(f) for f in folds) == [3, 3, 4, 4, 4, 4, 4]
    assert bench.make_folds(ids, 7) == folds  # seeded


def test_one_smoke_fold_reports_every_key_with_both_floors(smoke_cohort, tmp_path):
    bench = _bench()
    summary = bench.run(
        'smoke',
        work_dir=tmp_path / 'smoke',
        data_dir=str(smoke_cohort.root.parent),
        num_folds=5,
        max_folds=1,
        prior_wall_s=100.0,
        settings={'deepssm.trainer.epochs': 1},
        seeds=[0, 1],
    )
    keys = (
        'profile',
        'folds',
        'mean_surface_distance_mm',
        'hausdorff_mm',
        'particle_rmse_mm',
        'mean_shape_baseline_mm',
        'pca_floor_mm',
        'ratio_to_mean_shape',
        'ratio_to_pca_floor',
        'wall_s',
    )
    assert set(keys) <= set(summary) and summary['folds'] == 5 and summary['folds_run'] == 1
    assert summary['seeds'] == [0, 1] and [p['seed'] for p in summary['per_seed']] == [0, 1]
    by = {(r['id'], r['seed'], r['method']): r['mean'] for r in summary['per_subject']}
    for p in summary['per_seed']:  # each seed's figures come from that seed's rows only
        ids = sorted({i for i, s, _ in by if s == p['seed']})
        dm = sum(by[i, p['seed'], 'deepssm'] for i in ids) / len(ids)
        ms = sum(by[i, p['seed'], 'mean_shape'] for i in ids) / len(ids)
        pf = sum(by[i, p['seed'], 'pca_floor'] for i in ids) / len(ids)
        assert p['mean_surface_distance_mm'] == pytest.approx(dm) and p['n_test_subjects'] == len(ids) == 2
        assert p['skill'] == pytest.approx((ms - dm) / (ms - pf))
        assert p['wins_vs_mean_shape'] == sum(by[i, p['seed'], 'deepssm'] < by[i, p['seed'], 'mean_shape'] for i in ids)
    seed_means = [p['mean_surface_distance_mm'] for p in summary['per_seed']]
    assert seed_means[0] != seed_means[1]  # the seeds trained different networks
    assert summary['seed_spread_mm'] == pytest.approx(max(seed_means) - min(seed_means))
    assert summary['wins_vs_mean_shape'] == min(p['wins_vs_mean_shape'] for p in summary['per_seed'])
    assert bench.skill(0.7, 0.8, 0.6) == pytest.approx(0.5) and bench.skill(0.9, 0.8, 0.6) == pytest.approx(-0.5)
    assert all(math.isfinite(summary[k]) and summary[k] > 0 for k in keys[2:])
    assert summary['wall_s'] > summary['prior_wall_s'] == 100.0
    assert summary['ratio_to_mean_shape'] == pytest.approx(
        summary['mean_surface_distance_mm'] / summary['mean_shape_baseline_mm']
    )
    # projecting onto every mode of the training shapes leaves a smaller particle error than the kept modes do
    rmse = {(r['id'], r['method']): r['particle_rmse'] for r in summary['per_subject']}
    test_ids = summary['per_fold'][0]['test_ids']
    assert all(rmse[i, 'pca_floor_all_modes'] <= rmse[i, 'pca_floor'] + 1e-6 for i in test_ids)
    assert any(rmse[i, 'pca_floor_all_modes'] < rmse[i, 'pca_floor'] - 1e-3 for i in test_ids)
    assert summary['best_ratio_to_mean_shape'] == pytest.approx(
        summary['pca_floor_all_modes_mm'] / summary['mean_shape_baseline_mm']
    )
    methods = {r['method'] for r in summary['per_subject']}
    assert methods == {'deepssm', 'mean_shape', 'pca_floor', 'pca_floor_all_modes'}
    assert {r['id'] for r in summary['per_subject']} == set(test_ids)
    assert summary['settings'] == {'deepssm.trainer.epochs': 1}
    floors = sorted((tmp_path / 'smoke' / 'fold_0').glob('**/analysis_all_modes/pca_floor_all_modes'))
    assert [f.parents[1].name.rsplit('_', 1)[1] for f in floors] == ['seed0', 'seed1']  # one per model
