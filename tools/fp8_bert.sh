#!/usr/bin/env bash
# Writes docs/accuracy_fp8_bert.md: BERT-tiny trained from random weights on the
# synthetic negation task (make_text_task --negation) in f32 and with
# DeepSeek-V3's FP8 recipe emulated (train_bert --fp8=deepseek, E4M3 and E5M2
# gradients), the same seed and data order, and the relative gap of the last
# epoch's mean training loss, the measure DeepSeek-V3 reports (issue 21).
# Usage: tools/fp8_bert.sh [work_dir] [train_examples] [epochs] [gradient formats, "e4m3 e5m2"]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/quanta_fp8_bert}"
n="${2:-16384}"
epochs="${3:-6}"
gradients="${4:-e4m3 e5m2}"
bazel build //apps:train_bert //apps:make_text_task >/dev/null
bin="$(bazel info bazel-bin 2>/dev/null)/apps"
mkdir -p "$work"
"$bin/make_text_task" --out="$work/task" --train="$n" --test=2048 --negation --seed=1 >/dev/null
files="--train=$work/task/train.tsv --test=$work/task/test.tsv --vocab=$work/task/vocab.txt --max_len=40 --seed=0 --config=tiny"
start=$(date +%s)
rows=""
f32_loss=""
for fp8 in none $gradients; do
  flags="--epochs=$epochs --quant=none"
  [[ "$fp8" != none ]] && flags+=" --fp8=deepseek --fp8_gradient=$fp8"
  out="$("$bin/train_bert" $files $flags 2>&1)" || { echo "$out" >&2; exit 1; }
  echo "$out" | grep -E "epoch|fp8 training" >&2 || true
  # "f32 epoch 6: train loss 0.1234, test accuracy ..." -> the last epoch's loss
  loss="$(echo "$out" | grep -E "^(f32|fp8) epoch $epochs:" | sed -E 's/.*train loss ([0-9.]+),.*/\1/')"
  line="$(echo "$out" | grep -E "^BERT-tiny (f32|fp8)")"
  acc="$(echo "$line" | awk '{for (i = 1; i <= NF; ++i) if ($i ~ /%$/) {print $i; exit}}')"
  f1="$(echo "$line" | awk '{c = 0; for (i = 1; i <= NF; ++i) if ($i ~ /%$/ && ++c == 2) {print $i; exit}}')"
  if [[ "$fp8" == none ]]; then
    f32_loss="$loss"
    gap="—"
    name="f32"
  else
    gap="$(awk -v q="$loss" -v f="$f32_loss" 'BEGIN {printf "%+.3f%%", 100 * (q - f) / f}')"
    name="FP8 (DeepSeek-V3, gradients ${fp8^^})"
  fi
  rows+="| $name | $loss | $gap | $acc | $f1 | \`train_bert $flags\` |"$'\n'
done
minutes=$(( ($(date +%s) - start) / 60 ))
cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') (family $(grep -m1 'cpu family' /proc/cpuinfo | sed 's/.*: //') model $(grep -m1 -E '^model[[:space:]]+:' /proc/cpuinfo | sed 's/.*: //')), $(nproc) cores"
cat > docs/accuracy_fp8_bert.md <<EOF
# FP8 training of BERT-tiny against f32

BERT-tiny (2 layers, hidden 128) trained from random weights on the synthetic
negation task (\`make_text_task --negation --train=$n --test=2048\`) for
$epochs epochs (AdamW, lr 1e-3, linear warmup and decay, batch 32): once in f32,
then with DeepSeek-V3's FP8 recipe emulated (\`--fp8=deepseek\`, quant/fp8.h:
E4M3 inputs to the forward, input-gradient and weight-gradient GEMMs of every
Linear but the classifier, 1 x 128 activation and gradient tiles, 128 x 128
weight blocks; f32 master weights, AdamW state, embeddings, layer norms and
attention), the same seed and data order. The loss is the mean training loss of
the last epoch; the gap is FP8 minus f32 over f32, the measure DeepSeek-V3
reports (below 0.25% against BF16). Accuracy and F1 (binary, class 1) of the
model as trained (FP8 rows: evaluated in FP8) on the 2,048 test sentences.
Produced by \`tools/fp8_bert.sh $work $n $epochs "$gradients"\` ($(date -u +%Y-%m-%d), $minutes min on $cpu);
common flags: \`$files\` (paths under the work folder).

| row | last-epoch training loss | gap vs f32 | accuracy | F1 | command |
|---|---|---|---|---|---|
$rows
The Fashion-MNIST counterpart: docs/accuracy_fp8_quick.md
(\`reproduce_tables --table=fp8\`). What FP8 training is and is not (an
emulation: f32 products of exactly the values FP8 GEMMs read):
docs/minifloats.md.
EOF
echo "wrote docs/accuracy_fp8_bert.md" >&2
