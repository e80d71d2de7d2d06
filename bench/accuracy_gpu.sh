#!/usr/bin/env bash
# Runs folds of the accuracy benchmark up to prediction on a GPU machine without VTK, then packs the
# small outputs the analysis needs into $OUT/folds.tgz. The analysis then runs where PyVista/VTK is:
#   python bench/accuracy.py --profile P --work-dir /tmp/dsb/work --data-dir /tmp/dsb/data --analyze-only \
#       [--max-folds K] [--set ...as on the GPU] --prior-wall-s <seconds the GPU part took>
# (the folds.tgz unpacked into /tmp/dsb/work/P first).
#
# Usage: bench/accuracy_gpu.sh PROFILE NUM_FOLDS [FOLD ...]
#   no FOLD given: every fold, all in parallel (2 worker processes each);
#   FOLD given:    those folds one after another, each with PROCESSES workers (default: all cores).
# Environment:
#   OUT             where folds.tgz and the logs go (required)
#   WORK            work folder (default /tmp/dsb/work); the cohort cache is /tmp/dsb/data
#   SETTINGS        extra "--set key=value" arguments for every fold
#   TRAIN_BUDGET_S  if set (sequential folds only): time 25 training steps at the groomed size first and
#                   choose deepssm.trainer.epochs (and fine-tuning epochs, at most the profile's) so that
#                   training fits in this many seconds; the chosen numbers are printed and stored in the JSON
set -uo pipefail
PROFILE=${1:-workshop}
FOLDS=${2:-7}
shift 2 2>/dev/null || shift $#
ONLY=("$@")
export DEEPSSM_DATA_DIR=/tmp/dsb/data PYTHONUNBUFFERED=1
W=${WORK:-/tmp/dsb/work}
NPROC=${PROCESSES:-$(nproc)}
python3 -c "
import deepssm_nb
cfg = deepssm_nb.get_profile('$PROFILE'); cfg.data.data_dir = '/tmp/dsb/data'
from deepssm_nb.data import load_femur_cohort
load_femur_cohort(cfg.data, processes=8, progress=False)
print('cohort ready', flush=True)"
t0=$(date +%s)
run_fold() {  # fold, stage, processes, extra args...
  local k=$1 stage=$2 np=$3; shift 3
  # shellcheck disable=SC2086
  python3 bench/accuracy.py --profile "$PROFILE" --work-dir "$W" --data-dir /tmp/dsb/data --folds "$FOLDS" \
      --until "$stage" --only-fold "$k" --processes "$np" ${SETTINGS:-} "$@"
}
if [ ${#ONLY[@]} -eq 0 ]; then
  for k in $(seq 0 $((FOLDS - 1))); do
    OMP_NUM_THREADS=2 run_fold "$k" predict 2 > "$OUT/fold_$k.log" 2>&1 &
  done
  wait
else
  for k in "${ONLY[@]}"; do
    ts=$(date +%s)
    run_fold "$k" loaders "$NPROC" 2>&1 | tee "$OUT/fold_$k.log" | grep -v '%|' || true
    extra=()
    if [ -n "${TRAIN_BUDGET_S:-}" ]; then
      left=$(( TRAIN_BUDGET_S - ($(date +%s) - ts) ))
      read -r E FT < <(python3 - "$W/$PROFILE/fold_$k" "$PROFILE" "$left" <<'EOF'
import json, subprocess, sys
import SimpleITK as sitk
import deepssm_nb
fold, profile, left = sys.argv[1], sys.argv[2], float(sys.argv[3])
cfg = deepssm_nb.get_profile(profile)
shape = sitk.ReadImage(f'{fold}/groomed/reference_image.nrrd').GetSize()[::-1]
out = subprocess.run([sys.executable, 'bench/train_speed.py', '--worker', 'speed', '--device', 'cuda',
                      '--variant', 'auto', '--warmup', '3', '--iters', '25',
                      '--batch', str(cfg.loader.batch_size), '--shape', ','.join(map(str, shape))],
                     capture_output=True, text=True, check=True).stdout
sps = json.loads(out.strip().splitlines()[-1])['samples_per_s']
n = cfg.augment.num_samples + cfg.data.num_subjects - cfg.data.num_test
epoch_s = 1.25 * ((1 - cfg.loader.val_fraction) * n + cfg.loader.val_fraction * n / 3) / sps
total = max(2, int((left - 120) / epoch_s))
ft = min(cfg.deepssm.fine_tune.epochs, max(1, total // 10))
print(min(cfg.deepssm.trainer.epochs, total - ft), ft)
print(f'{shape}: {sps:.0f} samples/s, about {epoch_s:.1f} s an epoch, {left:.0f} s left', file=sys.stderr)
EOF
)
      echo "fold $k: training budget gives $E epochs + $FT fine-tuning epochs"
      extra=(--set "deepssm.trainer.epochs=$E" --set "deepssm.fine_tune.epochs=$FT")
    fi
    run_fold "$k" predict "$NPROC" "${extra[@]}" 2>&1 | tee -a "$OUT/fold_$k.log" | grep -v '%|' || true
  done
fi
echo "folds: $(( $(date +%s) - t0 )) s"
cd "$W/$PROFILE" && tar czf "$OUT/folds.tgz" fold_*/model/*/train_log.csv fold_*/model/*/test_predictions \
   fold_*/model/*/calibration.json fold_*/model/*/*.json fold_*/augmentation/PCA_Particle_Info \
   fold_*/augmentation/augmentation.json fold_*/groomed/groom.json fold_*/groomed/particles 2>/dev/null
ls -la "$OUT"; tail -n 3 "$OUT"/fold_*.log
