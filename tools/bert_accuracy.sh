#!/usr/bin/env bash
# Writes docs/accuracy_bert.md: BERT-tiny on the synthetic negation task
# (make_text_task --negation), f32 fine-tuned once, then each quantized row from
# that model (PTQ and QAT, W8A8 and W4A8, dynamic int8), every row's command in
# the table. Usage: tools/bert_accuracy.sh [work_dir]   (about 10 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/tmp/quanta_bert_accuracy}"
bazel build //apps:train_bert //apps:make_text_task >/dev/null
bin="$(bazel info bazel-bin 2>/dev/null)/apps"
mkdir -p "$work"
"$bin/make_text_task" --out="$work/task" --train=16384 --test=2048 --negation --seed=1 >/dev/null
files="--train=$work/task/train.tsv --test=$work/task/test.tsv --vocab=$work/task/vocab.txt --max_len=40 --seed=0 --config=tiny"
rows=""
run() {  # label, flags
  local out
  out="$("$bin/train_bert" $files $2 2>&1)" || { echo "$out" >&2; exit 1; }
  echo "$out" | grep -E "epoch" >&2 || true
  # The summary's last row: the converted model; the fake-quant row when there is one.
  while IFS= read -r line; do
    rows+="| $1 | $(echo "$line" | sed -E 's/^(BERT-tiny [^%]*[^ ]) +([0-9.]+%) +([0-9.]+%) +([^ ]+)$/\1 | \2 | \3 | \4/') | \`train_bert $2\` |"$'\n'
  done < <(echo "$out" | grep -E "^BERT-tiny (f32|QAT|PTQ|int8)" | { if [[ "$1" == f32* ]]; then grep "f32 "; else grep -v "f32 "; fi; } || true)
}
f32_out="$("$bin/train_bert" $files --epochs=6 --quant=none --save="$work/f32.safetensors" 2>&1)"
echo "$f32_out" | grep -E "epoch" >&2
f32_line="$(echo "$f32_out" | grep -E "^BERT-tiny f32")"
rows+="| f32 | $(echo "$f32_line" | sed -E 's/^(BERT-tiny f32) +([0-9.]+%) +([0-9.]+%) +([^ ]+)$/\1 | \2 | \3 | \4/') | \`train_bert --epochs=6 --quant=none\` |"$'\n'
init="--init_from=$work/f32.safetensors --epochs=0"
# QAT trains one more epoch: this row is the same epoch without quantization.
run "f32 + 1 epoch" "--init_from=$work/f32.safetensors --epochs=1 --lr=2e-4 --quant=none"
run "dynamic int8" "$init --quant=none"
run "PTQ W8A8" "$init --quant=ptq"
run "PTQ W4A8" "$init --quant=ptq --wbits=4"
run "QAT W8A8" "$init --quant=qat --qat_epochs=1 --qat_lr=2e-4"
run "QAT W4A8" "$init --quant=qat --qat_epochs=1 --qat_lr=2e-4 --wbits=4"
cat > docs/accuracy_bert.md <<EOF
# BERT accuracy

BERT-tiny (2 layers, hidden 128, 4.4M parameters with a full vocabulary; 485k
with this task's 45 tokens) fine-tuned from random weights on the synthetic
negation task: \`make_text_task --negation --train=16384 --test=2048\` (label 1
when a sentence holds more good words than bad ones, "not great" counting as
bad, so word order matters). f32: 6 epochs, AdamW, lr 1e-3, linear warmup and
decay, batch 32. Every quantized row starts from that f32 model
(\`--init_from\`): PTQ calibrates on 8 batches; QAT fine-tunes 1 epoch at lr 2e-4.
Accuracy and F1 (binary, class 1) on the 2,048 test sentences; ms/example at
batch 32, 2 threads, on the 2-core VM. Produced by \`tools/bert_accuracy.sh\`
($(date -u +%Y-%m-%d)); common flags: \`$files\` (paths under the work folder).

| row | model | accuracy | F1 | ms/example | command |
|---|---|---|---|---|---|
$rows
QAT fine-tunes one more epoch than the f32 model had, so compare its rows with
"f32 + 1 epoch" (the same epoch without quantization), and each int8 row with
the fake-quant row above it (what the conversion changes). Dynamic int8 is
slower than f32 at this size: each Linear reduces its whole input twice for the
range, which costs more than BERT-tiny's small GEMMs save; BERT-base timings are
in docs/benchmarks.md.

A synthetic task, not a benchmark corpus: it checks that fine-tuning, QAT, PTQ
and the int8 conversion keep what the f32 model learned. For a real one, run
\`train_bert\` on your own \`label<TAB>text\` files (README).
EOF
echo "wrote docs/accuracy_bert.md" >&2
