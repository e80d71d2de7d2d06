#!/usr/bin/env bash
# Runs every fold of the accuracy benchmark up to prediction on a GPU machine without VTK,
# folds in parallel, then packs the small outputs the analysis needs into $OUT/folds.tgz.
# The analysis then runs where PyVista/VTK is installed:
#   python bench/accuracy.py --profile P --work-dir /tmp/dsb/work --data-dir /tmp/dsb/data --analyze-only
set -uo pipefail
PROFILE=${1:-workshop}
FOLDS=${2:-7}
export DEEPSSM_DATA_DIR=/tmp/dsb/data OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 PYTHONUNBUFFERED=1
W=${WORK:-/tmp/dsb/work}
python3 -c "
import deepssm_nb
cfg = deepssm_nb.get_profile('$PROFILE'); cfg.data.data_dir = '/tmp/dsb/data'
from deepssm_nb.data import load_femur_cohort
load_femur_cohort(cfg.data, processes=8, progress=False)
print('cohort ready', flush=True)"
t0=$(date +%s)
for k in $(seq 0 $((FOLDS - 1))); do
  python3 bench/accuracy.py --profile "$PROFILE" --work-dir $W --data-dir /tmp/dsb/data --until predict \
      --only-fold "$k" --processes 2 > "$OUT/fold_$k.log" 2>&1 &
done
wait
echo "all folds: $(( $(date +%s) - t0 )) s"
cd $W/$PROFILE && tar czf "$OUT/folds.tgz" fold_*/model/*/train_log.csv fold_*/model/*/test_predictions \
   fold_*/augmentation/PCA_Particle_Info fold_*/augmentation/augmentation.json fold_*/groomed/groom.json \
   fold_*/groomed/particles 2>/dev/null
ls -la "$OUT"; tail -n 3 "$OUT"/fold_*.log
