#!/usr/bin/env bash
# //apps:train --distributed on real OpenMPI ranks of this machine, on
# Fashion-MNIST (Debian's files): the flags users launch with, end to end.
#   train_dist_test.sh TRAIN RUN_MPI
# - 2 ranks, f32 exchange against 8-bit and 4-bit exchange with error feedback:
#   final test accuracy within 0.3 points; 4-bit without error feedback is
#   worse than with it (the feedback is what makes 4 bits work);
# - FedAvg, 4 clients on a non-IID Dirichlet split (alpha 0.5): converges, and
#   8-bit model deltas land within 0.5 points of f32 deltas;
# - a failure on one rank ends the job with that rank's message.
set -uo pipefail
train=$1
run_mpi=$2
tmp=${TEST_TMPDIR:-$(mktemp -d)}
common=(--dataset=fashion_mnist --model=fmnist_resnet8_half --threads=1 --workers=1 --warmup_epochs=0
        --nesterov=true --augment=false --test_subset=5000)

run() {  # run NAME RANKS FLAGS...: the run's final test accuracy (percent) on stdout
  local name=$1 ranks=$2
  shift 2
  if ! bash "$run_mpi" "$ranks" "$train" --distributed "${common[@]}" --metrics="$tmp/$name.jsonl" "$@" \
      >"$tmp/$name.log" 2>&1; then
    echo "FAILED: $name" >&2
    tail -n 30 "$tmp/$name.log" >&2
    exit 1
  fi
  tail -n 1 "$tmp/$name.jsonl" | sed -E 's/.*"test_accuracy": ([0-9.]+).*/\1/' | awk '{printf "%.2f", 100 * $1}'
}
check() {  # check DESCRIPTION AWK-CONDITION
  if awk "BEGIN { exit !($2) }"; then
    echo "ok: $1"
  else
    echo "FAIL: $1 ($2)"
    failed=1
  fi
}
failed=0

dp=(--epochs=1 --train_subset=12800 --batch=64 --lr=0.1)
f32=$(run f32 2 "${dp[@]}")
q8=$(run q8 2 "${dp[@]}" --grad_bits=8)
q4=$(run q4 2 "${dp[@]}" --grad_bits=4)
q4_no_ef=$(run q4_no_ef 2 "${dp[@]}" --grad_bits=4 --error_feedback=false)
echo "data parallel, 2 ranks: f32 $f32%, 8-bit $q8%, 4-bit $q4%, 4-bit without error feedback $q4_no_ef%"
grep -h "bytes sent per step" "$tmp"/f32.log "$tmp"/q8.log "$tmp"/q4.log
check "8-bit exchange within 0.3 points of f32" "$q8 - $f32 >= -0.3"
check "4-bit exchange within 0.3 points of f32" "$q4 - $f32 >= -0.3"
check "4-bit without error feedback is worse than with it" "$q4_no_ef < $q4 - 0.3"
check "f32 data parallel trained" "$f32 > 80"

fed=(--epochs=2 --train_subset=12800 --batch=32 --lr=0.05 --local_steps=10 --dirichlet_alpha=0.5)
fed32=$(run fed32 4 "${fed[@]}")
fed8=$(run fed8 4 "${fed[@]}" --grad_bits=8)
echo "federated averaging, 4 non-IID clients: f32 deltas $fed32%, 8-bit deltas $fed8%"
sed -n '/Dirichlet split/,/client 3/p' "$tmp/fed32.log"
check "FedAvg on non-IID clients converges" "$fed32 > 70"
check "8-bit deltas within 0.5 points of f32 deltas" "$fed8 - $fed32 >= -0.5 && $fed8 - $fed32 <= 0.5"

# Rank 0 cannot make its checkpoint folder; rank 1 is already waiting in a
# collective. The job must end (not hang) and say which rank failed and why.
if timeout 120 bash "$run_mpi" 2 "$train" --distributed "${common[@]}" --epochs=1 --train_subset=1280 --batch=64 \
    --checkpoint_dir=/proc/quanta_cannot >"$tmp/fail.log" 2>&1; then
  echo "FAIL: the run with an unwritable checkpoint folder succeeded"
  failed=1
else
  rc=$?
  check "a failed rank ends the job (exit $rc, not the 124 of a hang)" "$rc != 124"
  if grep -q "rank 0 of 2: error: --checkpoint_dir=/proc/quanta_cannot" "$tmp/fail.log"; then
    echo "ok: the failing rank and its reason are printed"
  else
    echo "FAIL: no 'rank 0 of 2: error: --checkpoint_dir=...' in:"
    cat "$tmp/fail.log"
    failed=1
  fi
fi
exit $failed
