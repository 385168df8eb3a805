#!/usr/bin/env bash
# Runs the example programs and checks what they print against the seeds'
# worked numbers, that --help and --dot work, and that bad input gives a
# clear error.  Ends with "examples: N passed, N failed[, N skipped]".
set -u
bin=${1:-build}/examples
tmp=$(mktemp -d /tmp/nabla-examples.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0; skipped=0

# Error cases require exit status 1 exactly, so that a sanitizer's exit
# status (a leak on an error path) fails them.
check() { # check NAME COMMAND... : the command must succeed
  local name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then passed=$((passed + 1)); else
    failed=$((failed + 1)); echo "FAIL: $name"; sed 's/^/    /' "$tmp/out" | tail -20; fi
}
has() { grep -qF -- "$1" "$tmp/last"; }
run() { "$@" >"$tmp/last" 2>&1; }

# gradient_descent: from 5, y = 28 then x = 4, y = 19; from -6, x = -4.8, y = 26.04
check "gradient_descent from 5" bash -c "'$bin/gradient_descent' > '$tmp/last' &&
  grep -Eq '^ +0 +5\.000000 +28\.000000 +10\.000000$' '$tmp/last' &&
  grep -Eq '^ +1 +4\.000000 +19\.000000 +8\.000000$' '$tmp/last'"
check "gradient_descent from -6" bash -c "'$bin/gradient_descent' --x0 -6 --steps 1 > '$tmp/last' &&
  grep -Eq '^ +1 +-4\.800000 +26\.040000 +-9\.600000$' '$tmp/last'"
# --steps 0 draws the article's first step: x = 5, dy/dx = 2x = 10, y = 28
check "gradient_descent --steps 0" bash -c "'$bin/gradient_descent' --steps 0 --dot '$tmp/gd0.dot' --html '$tmp/gd0.html' > '$tmp/last' &&
  grep -Eq '^ +0 +5\.000000 +28\.000000 +10\.000000$' '$tmp/last' && test \$(grep -Ec '^ +[0-9]+ ' '$tmp/last') = 1 &&
  grep -qF 'step 0 at x = 5, before its update' '$tmp/gd0.dot' && grep -qF 'label=\"x\\nvalue 5\\ngrad 10\"' '$tmp/gd0.dot' &&
  grep -qF '∂u/∂x = 2·x\\n1 × 10 = 10' '$tmp/gd0.dot' && grep -q 'id=\"frames\"' '$tmp/gd0.html'"
check "gradient_descent --steps -1" bash -c "'$bin/gradient_descent' --steps -1 > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"invalid value '-1' for --steps\" '$tmp/last'"

# forward3: seed 004's numbers
check "forward3 values" bash -c "'$bin/forward3' > '$tmp/last' &&
  grep -q '^X_hidden  = 1.1600 0.4200 0.6200$' '$tmp/last' &&
  grep -q '^O_hidden  = 0.7613 0.6035 0.6502$' '$tmp/last' &&
  grep -q '^X_output  = 0.9759 0.8886 1.2546$' '$tmp/last' &&
  grep -q '^O_output  = 0.7263 0.7086 0.7781$' '$tmp/last'"

# logreg on generated data, on a CSV file, and on bad files
check "logreg generated" bash -c "'$bin/logreg' --epochs 300 > '$tmp/last' &&
  awk '/^accuracy:/ {found = 1; ok = (\$2 >= 0.8)} END {exit !(found && ok)}' '$tmp/last'"
awk 'BEGIN { srand(3); print "age,chol,thalach,target";
  for (i = 0; i < 200; i++) { a = 30 + 40 * rand(); c = 150 + 200 * rand(); t = 90 + 100 * rand();
    z = 0.08 * (a - 50) - 0.05 * (t - 140) + 0.4 * (rand() - 0.5);
    printf "%.1f,%.1f,%.1f,%d\n", a, c, t, (z > 0) } }' > "$tmp/heart.csv"
check "logreg csv" bash -c "'$bin/logreg' --csv '$tmp/heart.csv' --target target > '$tmp/last' &&
  grep -q 'read 200 rows of 3 features' '$tmp/last' &&
  awk '/^accuracy:/ {ok = (\$2 >= 0.85)} END {exit !ok}' '$tmp/last'"
printf 'age,chol,target\n50,200,1\n61,,0\n' > "$tmp/missing.csv"
check "logreg missing value" bash -c "'$bin/logreg' --csv '$tmp/missing.csv' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'missing.csv:3: column .chol. (2) is empty' '$tmp/last'"
check "logreg unknown target" bash -c "'$bin/logreg' --csv '$tmp/heart.csv' --target label > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q \"no column named 'label'\" '$tmp/last'"
printf 'a,target\n1,0\n2,3\n' > "$tmp/notbinary.csv"
check "logreg non-binary target" bash -c "'$bin/logreg' --csv '$tmp/notbinary.csv' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'needs 0 or 1' '$tmp/last'"

printf 'a,b,target\n1,2,0\n3,1\n' > "$tmp/ragged.csv"
check "logreg ragged row" bash -c "'$bin/logreg' --csv '$tmp/ragged.csv' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'ragged.csv:3: 2 fields, expected 3 as in the header' '$tmp/last'"
check "logreg bad number" bash -c "'$bin/logreg' --epochs abc > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"invalid value 'abc' for --epochs (expected a whole number\" '$tmp/last'"
check "logreg value out of range" bash -c "'$bin/logreg' --lr -1 > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"invalid value '-1' for --lr (expected a number from 0 to 100)\" '$tmp/last'"

# mlp on Fashion-MNIST (a short run), when the data is installed
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  check "mlp short run, save and reload" bash -c "'$bin/mlp' --epochs 1 --train-limit 3000 --hidden 64 \
      --save '$tmp/mlp.nbp' --history '$tmp/h.csv' --dot '$tmp/mlp.dot' > '$tmp/last' 2>&1 &&
    grep -q 'reloaded model: test accuracy .* (the same)' '$tmp/last' &&
    awk '/^test accuracy:/ {ok = (\$3 >= 0.70)} END {exit !ok}' '$tmp/last' &&
    grep -q 'Ankle boot' '$tmp/last' && test -s '$tmp/h.csv' && dot -Tsvg '$tmp/mlp.dot' -o /dev/null"
  check "mlp unwritable --history" bash -c "'$bin/mlp' --epochs 1 --train-limit 300 --hidden 8 \
      --save '$tmp/mlp2.nbp' --history /nonexistent/h.csv > '$tmp/last' 2>&1; test \$? = 1 &&
    grep -q 'nb_progress_save_csv: cannot write /nonexistent/h.csv' '$tmp/last'"
else
  skipped=$((skipped + 1)); echo "skipped: mlp (apt-get install dataset-fashion-mnist)"
fi
check "mlp --plot without --history" bash -c "'$bin/mlp' --plot '$tmp/p.png' > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q 'needs --history' '$tmp/last'"
# mlp over MPI: two processes train as one would, when nabla was built with
# OpenMPI (not in the sanitizer build: OpenMPI's own allocations would be
# reported as leaks)
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v mpirun > /dev/null &&
   [ -e "${1:-build}/libnabla_mpi.a" ] && case "$bin" in *sanitize*) false ;; *) true ;; esac; then
  root=; [ "$(id -u)" = 0 ] && root=--allow-run-as-root
  check "mlp --distributed on 2 processes" bash -c "timeout 300 mpirun $root --oversubscribe -np 2 '$bin/mlp' \
      --distributed --epochs 1 --train-limit 3000 --hidden 64 --save '$tmp/mlp-dist.nbp' > '$tmp/last' 2>&1 &&
    grep -q 'over MPI: 2 processes' '$tmp/last' && grep -q 'reloaded model: test accuracy .* (the same)' '$tmp/last' &&
    awk '/^test accuracy:/ {ok = (\$3 >= 0.70)} END {exit !ok}' '$tmp/last'"
  check "mlp --bench --distributed on 2 processes" bash -c "timeout 120 mpirun $root --oversubscribe -np 2 \
      '$bin/mlp' --bench --distributed --hidden 32 --batch 64 > '$tmp/last' 2>&1 &&
    grep -Eq 'ms per step, .* 0 allocations after warm-up, [0-9.]+ ms per step waiting for the all-reduce' '$tmp/last'"
else
  skipped=$((skipped + 1)); echo "skipped: mlp --distributed (needs the data, OpenMPI and a plain build)"
fi
check "mlp --distributed with --dot" bash -c "'$bin/mlp' --distributed --dot '$tmp/x.dot' > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q 'leave out --distributed' '$tmp/last'"
check "mlp missing data" bash -c "'$bin/mlp' --data /nonexistent > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'cannot open /nonexistent/train-images-idx3-ubyte.gz' '$tmp/last' &&
  grep -q 'apt-get install dataset-fashion-mnist' '$tmp/last'"
mkdir -p "$tmp/cut" && printf '\0\0\10\3\0\0\352\140\0\0\0\34\0\0\0\34\1\2\3' | gzip > "$tmp/cut/train-images-idx3-ubyte.gz"
check "mlp truncated data" bash -c "'$bin/mlp' --data '$tmp/cut' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'train-images-idx3-ubyte.gz is truncated: a (60000, 28, 28) tensor of unsigned byte values needs 47040000 bytes' '$tmp/last'"
# An IDX file of unsigned bytes, all zero: mk_idx FILE DIM...
mk_idx() {
  local out=$1 n=1 d; shift
  { printf '\x00\x00\x08'"\\x$(printf %02x $#)"
    for d in "$@"; do
      printf "\\x$(printf %02x $((d >> 24 & 255)))\\x$(printf %02x $((d >> 16 & 255)))\\x$(printf %02x $((d >> 8 & 255)))\\x$(printf %02x $((d & 255)))"
      n=$((n * d))
    done
    head -c "$n" /dev/zero; } | gzip > "$out"
}
mkdir -p "$tmp/unpaired"
mk_idx "$tmp/unpaired/train-images-idx3-ubyte.gz" 64 28 28
mk_idx "$tmp/unpaired/train-labels-idx1-ubyte.gz" 64
mk_idx "$tmp/unpaired/t10k-images-idx3-ubyte.gz" 32 28 28
mk_idx "$tmp/unpaired/t10k-labels-idx1-ubyte.gz" 16
check "mlp images and labels that do not pair up" bash -c "'$bin/mlp' --data '$tmp/unpaired' --epochs 1 > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'the test images (32, 28, 28) and labels (16,) in .* do not pair up' '$tmp/last'"
mkdir -p "$tmp/paired" && cp "$tmp/unpaired/train-"* "$tmp/paired/"
mk_idx "$tmp/paired/t10k-images-idx3-ubyte.gz" 16 28 28
mk_idx "$tmp/paired/t10k-labels-idx1-ubyte.gz" 16
case "$bin" in
  *sanitize*) skipped=$((skipped + 1)) ;; # AddressSanitizer needs more address space than the limit
  *) check "mlp network too large for memory" bash -c "ulimit -v 3000000; '$bin/mlp' --data '$tmp/paired' \
       --hidden 30000,30000 > '$tmp/last' 2>&1; test \$? = 1 &&
       grep -q 'mlp: cannot make the network: nb_params_create: cannot allocate 3600000096 bytes for (30000, 30000)' '$tmp/last'" ;;
esac
check "mlp bad layer list" bash -c "'$bin/mlp' --hidden 64,x > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"invalid layer sizes '64,x' for --hidden\" '$tmp/last'"
check "mlp --bench" bash -c "timeout 60 '$bin/mlp' --bench --hidden 32 --batch 32 > '$tmp/last' 2>&1 &&
  grep -Eq '^[0-9.]+ ms per step, [0-9]+ examples/s over [0-9]+ steps, 0 allocations after warm-up$' '$tmp/last'"
check "mlp bad option" bash -c "'$bin/mlp' --activation swish > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"unknown activation 'swish'\" '$tmp/last'"

# cnn on Fashion-MNIST (a short run), when the data is installed
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  check "cnn short run, save as safetensors and reload" bash -c "'$bin/cnn' --epochs 1 --train-limit 1280 \
      --test-limit 1000 --save '$tmp/cnn.safetensors' --dot '$tmp/cnn.dot' > '$tmp/last' 2>&1 &&
    grep -q 'reloaded model: test accuracy .* (the same)' '$tmp/last' &&
    awk '/^test accuracy:/ {ok = (\$3 >= 0.55)} END {exit !ok}' '$tmp/last' &&
    dot -Tsvg '$tmp/cnn.dot' -o /dev/null && grep -q 'conv2d + relu' '$tmp/cnn.dot' &&
    head -c 16 '$tmp/cnn.safetensors' | tail -c 8 | grep -q '__metadata__\|{'"
else
  skipped=$((skipped + 1)); echo "skipped: cnn (apt-get install dataset-fashion-mnist)"
fi
check "cnn --bench" bash -c "timeout 60 '$bin/cnn' --bench --batch 8 --filters 8 --hidden 16 > '$tmp/last' 2>&1 &&
  grep -Eq '^[0-9.]+ ms per step, .* 0 allocations after warm-up$' '$tmp/last'"
check "cnn bad loss" bash -c "'$bin/cnn' --loss hinge > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"unknown loss 'hinge' (softmax or bce)\" '$tmp/last'"
check "cnn missing data" bash -c "'$bin/cnn' --data /nonexistent > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'cannot open /nonexistent/train-images-idx3-ubyte.gz' '$tmp/last'"

# charlm: the gradient through time checked, a language model of words
# against the bigram model, and invented words
if [ -r /usr/share/dict/words ]; then
  check "charlm LSTM beats the bigram model" bash -c "'$bin/charlm' --iters 400 --samples 5 > '$tmp/last' 2>&1 &&
    grep -q 'gradient through time (LSTM, 3 steps, 3 units, 280 values): gradcheck passed' '$tmp/last' &&
    awk '/^validation:/ {ok = (\$3 < \$7)} END {exit !ok}' '$tmp/last' && grep -q '^invented words' '$tmp/last'"
  check "charlm GRU gradient through time" bash -c "'$bin/charlm' --cell gru --iters 1 --samples 0 > '$tmp/last' 2>&1 &&
    grep -q 'gradient through time (GRU, 3 steps, 3 units, [0-9]* values): gradcheck passed' '$tmp/last'"
else
  skipped=$((skipped + 1)); echo "skipped: charlm (apt-get install wamerican)"
fi
check "charlm missing word list" bash -c "'$bin/charlm' --words /nonexistent/words > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'cannot open /nonexistent/words' '$tmp/last' && grep -q 'apt-get install wamerican' '$tmp/last'"
printf 'Zürich\n42\n' > "$tmp/words"
check "charlm too few words" bash -c "'$bin/charlm' --words '$tmp/words' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'has 0 usable words (a to z and apostrophes); at least 100 are needed' '$tmp/last'"
# the word list must be a regular file (a FIFO would block, /dev/zero never end), and --dot must be written
awk 'BEGIN { for (i = 0; i < 150; i++) { w = ""; n = 3 + i % 5; x = i; for (k = 0; k < n; k++) { w = w substr("abcdefghijklmnopqrstuvwxyz", x % 26 + 1, 1); x = int(x / 3) + k * 7 }; print w } }' > "$tmp/words150"
mkfifo "$tmp/words.fifo"
check "charlm word list a FIFO" bash -c "timeout 20 '$bin/charlm' --words '$tmp/words.fifo' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'words.fifo is a FIFO, not a regular file' '$tmp/last'"
check "charlm word list /dev/zero" bash -c "timeout 20 '$bin/charlm' --words /dev/zero > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q '/dev/zero is a character device' '$tmp/last'"
check "charlm unwritable --dot" bash -c "'$bin/charlm' --words '$tmp/words150' --iters 1 --samples 0 \
    --dot /nonexistent/charlm.dot > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'nb_dot_save: cannot write /nonexistent/charlm.dot' '$tmp/last'"
check "charlm bad cell" bash -c "'$bin/charlm' --cell rnn > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"unknown cell 'rnn' (lstm or gru)\" '$tmp/last'"
check "charlm --bench" bash -c "timeout 60 '$bin/charlm' --bench --hidden 16 --batch 4 > '$tmp/last' 2>&1 &&
  grep -Eq 'ms per training step, 0 allocations after warm-up$' '$tmp/last'"

# gpt: a character-level GPT on fortunes: the held-out loss falls from its
# start, a checkpoint resumes exactly (every later step's loss, the held-out
# figures and the samples are those of the uninterrupted run, on 1 thread
# and when resumed on 2), and the KV cache writes the text that recomputing
# the prefix writes
tiny="--steps 40 --warmup 5 --log-every 1 --eval-chars 2048 --layers 2 --dim 32 --heads 2 --context 32 --batch 8"
# the steps after $1 in the output $2 (their number and loss, printed with
# 8 decimals), the held-out figures and the samples' text
after_step() { awk -v k="$1" '/^step / {if ($2 > k) print $2, $5; next} /^sampling:/ {next} /^after / || /^sample / || s {print} /^sample / {s = 1}' "$2"; }
export -f after_step
if [ -r /usr/share/games/fortunes/fortunes ] && [ -r /usr/share/games/fortunes/art ]; then
  check "gpt loss falls, KV cache text" bash -c "'$bin/gpt' $tiny --samples 2 --sample-chars 80 > '$tmp/last' 2>&1 &&
    grep -q 'a vocabulary of 113;' '$tmp/last' &&
    awk '/^before training:/ {a = \$4} /^after 40 steps:/ {b = \$7} END {exit !(a > 4.5 && b < a - 0.8)}' '$tmp/last' &&
    grep -q 'the same text both ways: yes (2 of 2 samples)' '$tmp/last' && test \$(grep -c '^sample [12] ' '$tmp/last') = 2"
  check "gpt resume: every later step" bash -c "'$bin/gpt' $tiny --samples 1 --sample-chars 80 > '$tmp/whole' 2>&1 &&
    '$bin/gpt' $tiny --samples 0 --stop-at 20 --save '$tmp/gpt.nbp' > '$tmp/first' 2>&1 &&
    grep -q '^checkpoint at step 20 ' '$tmp/first' && ! grep -q '^step    21' '$tmp/first' &&
    '$bin/gpt' $tiny --samples 1 --sample-chars 80 --resume '$tmp/gpt.nbp' > '$tmp/last' 2>&1 &&
    grep -q 'resumed from .* at step 20 ' '$tmp/last' && ! grep -q '^step    20' '$tmp/last' &&
    test \$(after_step 20 '$tmp/last' | grep -c '^[0-9]') = 20 && diff <(after_step 20 '$tmp/whole') <(after_step 20 '$tmp/last')"
  check "gpt --dot" bash -c "'$bin/gpt' $tiny --steps 1 --warmup 0 --samples 0 --dot '$tmp/gpt.dot' > '$tmp/last' 2>&1 &&
    dot -Tsvg '$tmp/gpt.dot' -o /dev/null && grep -q 'label=\"block 2\"' '$tmp/gpt.dot' && grep -q 'attention' '$tmp/gpt.dot'"
  check "gpt unwritable --dot" bash -c "'$bin/gpt' $tiny --steps 1 --warmup 0 --samples 0 --dot /nonexistent/gpt.dot > '$tmp/last' 2>&1;
    test \$? = 1 && grep -q 'nb_dot_save: cannot write /nonexistent/gpt.dot' '$tmp/last'"
  # large enough that products and element-wise ops are split between the threads
  split="--steps 20 --warmup 5 --log-every 1 --eval-chars 2048 --layers 2 --dim 64 --heads 2 --context 64 --batch 8 --samples 1 --sample-chars 60"
  check "gpt same numbers on 2 threads" bash -c "'$bin/gpt' $split > '$tmp/one' 2>&1 && '$bin/gpt' $split --threads 2 > '$tmp/two' 2>&1 &&
    diff <(grep -v 'ms per step\\|per second\\|thread' '$tmp/one') <(grep -v 'ms per step\\|per second\\|thread' '$tmp/two') &&
    diff <(after_step 0 '$tmp/one') <(after_step 0 '$tmp/two') && grep -q '^after 20 steps' '$tmp/two'"
  check "gpt resume on 2 threads, safetensors" bash -c "'$bin/gpt' $split --samples 0 --stop-at 7 --save '$tmp/gpt.safetensors' > '$tmp/first' 2>&1 &&
    '$bin/gpt' $split --threads 2 --resume '$tmp/gpt.safetensors' > '$tmp/last' 2>&1 && grep -q 'resumed from .* at step 7 ' '$tmp/last' &&
    test \$(after_step 7 '$tmp/last' | grep -c '^[0-9]') = 13 && diff <(after_step 7 '$tmp/one') <(after_step 7 '$tmp/last')"
  check "gpt resume another model" bash -c "'$bin/gpt' $tiny --heads 4 --samples 0 --resume '$tmp/gpt.nbp' > '$tmp/last' 2>&1;
    test \$? = 1 && grep -q 'gpt.nbp was trained with a vocabulary of 113 characters .* --heads 2 .* --heads 4' '$tmp/last'"
  check "gpt resume a cut checkpoint" bash -c "head -c 100000 '$tmp/gpt.nbp' > '$tmp/cut.nbp' && cp '$tmp/gpt.nbp.config' '$tmp/cut.nbp.config' &&
    '$bin/gpt' $tiny --samples 0 --resume '$tmp/cut.nbp' > '$tmp/last' 2>&1; test \$? = 1 && grep -q 'nb_checkpoint_load: .*cut.nbp' '$tmp/last'"
  check "gpt resume without FILE.config" bash -c "rm '$tmp/gpt.nbp.config' && '$bin/gpt' $tiny --samples 0 --resume '$tmp/gpt.nbp' > '$tmp/last' 2>&1;
    test \$? = 1 && grep -q 'needs the FILE.config that --save wrote' '$tmp/last'"
else
  skipped=$((skipped + 1)); echo "skipped: gpt (apt-get install fortunes)"
fi
if [ -r /usr/share/games/fortunes/tang300 ]; then
  check "gpt zh: characters, not bytes" bash -c "'$bin/gpt' --corpus zh $tiny --samples 1 --sample-chars 40 > '$tmp/last' 2>&1 &&
    grep -o 'a vocabulary of [0-9]*' '$tmp/last' | awk '{exit !(\$4 > 2000)}' &&
    awk '/^before training:/ {a = \$4} /^after 40 steps:/ {b = \$7} END {exit !(b < a - 0.5)}' '$tmp/last' &&
    grep -q 'the same text both ways: yes' '$tmp/last'"
else
  skipped=$((skipped + 1)); echo "skipped: gpt --corpus zh (apt-get install fortunes-zh)"
fi
check "gpt missing text" bash -c "'$bin/gpt' --text /nonexistent/fortunes > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'cannot open /nonexistent/fortunes' '$tmp/last'"
printf 'one\n%%\ntwo\n%%\n' > "$tmp/two.txt"
check "gpt text too short" bash -c "'$bin/gpt' --text '$tmp/two.txt' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'too short for windows of 128 characters' '$tmp/last'"
check "gpt bad corpus" bash -c "'$bin/gpt' --corpus fr > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"unknown corpus 'fr' (en or zh)\" '$tmp/last'"
check "gpt heads must divide the width" bash -c "'$bin/gpt' --dim 30 --heads 4 > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q 'heads must divide --dim' '$tmp/last'"

# custom_op: softplus defined with nabla_op.h, against built-in ops and central differences
check "custom_op" bash -c "'$bin/custom_op' > '$tmp/last' &&
  grep -q 'gradcheck passed' '$tmp/last' &&
  grep -q 'softplus(-20) in float32: ours 2.06115e-09, composed 0' '$tmp/last' &&
  awk '/^largest difference/ {ok = (\$NF < 1e-6)} END {exit !ok}' '$tmp/last'"

# rnn: the gradient through time checked, then the adding problem learned
check "rnn adding problem" bash -c "'$bin/rnn' --iters 800 > '$tmp/last' &&
  grep -q 'gradient through time (GRU, 4 steps, 3 units, 58 parameters): gradcheck passed' '$tmp/last' &&
  awk '/^test:/ {ok = (\$7 >= 0.9)} END {exit !ok}' '$tmp/last'"
check "rnn elman gradient through time" bash -c "'$bin/rnn' --cell elman --iters 1 > '$tmp/last' &&
  grep -q 'gradient through time (Elman, 4 steps, 3 units, 22 parameters): gradcheck passed' '$tmp/last'"
check "rnn bad cell" bash -c "'$bin/rnn' --cell lstm > '$tmp/last' 2>&1; test \$? = 2 &&
  grep -q \"unknown cell 'lstm' (gru or elman)\" '$tmp/last'"

# attention: one causal self-attention block reverses and sorts digits
check "attention reverse" bash -c "'$bin/attention' --iters 300 > '$tmp/last' &&
  awk '/^test:/ {ok = (\$3 >= 0.99)} END {exit !ok}' '$tmp/last'"
# its picture: every tensor named, the formulas in those names (no tape ids,
# no definitions pasted in), the masked scores summarised without the fill
# (12 positions: 12·11/2 = 66 masked)
check "attention --dot labels" bash -c "'$bin/attention' --iters 5 --dot '$tmp/attention.dot' > /dev/null &&
  grep -qF '∂loss/∂V = Aᵀ · ∂loss/∂AV' '$tmp/attention.dot' && grep -qF '∂loss/∂A = ∂loss/∂AV · Vᵀ' '$tmp/attention.dot' &&
  grep -qF '∂S/∂S_unmasked = [mask≠0]' '$tmp/attention.dot' &&
  grep -qF '(the 66 masked to -1e+09 left out)' '$tmp/attention.dot' &&
  ! grep -Eq 'label=\"t[0-9]+\\\\n|∂t[0-9]+|· t[0-9]+|softmax\\(S\\)ᵀ' '$tmp/attention.dot' && dot -Tsvg '$tmp/attention.dot' -o /dev/null"
check "attention sort" bash -c "'$bin/attention' --task sort --iters 1200 > '$tmp/last' &&
  awk '/^test:/ {ok = (\$3 >= 0.95)} END {exit !ok}' '$tmp/last'"

# newton: one step to the parabola's minimum; Newton beside gradient descent
check "newton" bash -c "'$bin/newton' --dot '$tmp/newton.dot' --html '$tmp/newton.html' > '$tmp/last' &&
  grep -Eq '^ +1 \| +4\.000000 \| +0\.000000$' '$tmp/last' &&
  grep -Eq '^ +2 \| +3\.200000 \| +0\.000000$' '$tmp/last' &&
  awk '/comes within 1e-6/ {ok = (\$(NF-1) > 100)} END {exit !ok}' '$tmp/last' &&
  dot -Tsvg '$tmp/newton.dot' -o /dev/null && grep -q 'label=\"y′\\\\nvalue 10\\\\ngrad 1\"' '$tmp/newton.dot' && grep -q 'label=\"2x\\\\nvalue 10' '$tmp/newton.dot' && grep -q '<svg' '$tmp/newton.html'"

# demo: trains, gradient-checks, and writes its pictures
check "demo" bash -c "'$bin/demo' --epochs 200 --out '$tmp/demo' > '$tmp/last' 2>&1 &&
  grep -q 'gradcheck passed' '$tmp/last' && grep -q 'Allocations during epochs 2 to 200: 0' '$tmp/last' &&
  awk '/^Final loss/ {ok = (\$5 >= 0.95)} END {exit !ok}' '$tmp/last' &&
  head -c 4 '$tmp/demo/boundary.png' | od -c | grep -q 'P   N   G' &&
  grep -q '<svg' '$tmp/demo/graph.svg' && test -s '$tmp/demo/history.csv'"

# --out paths that do not fit are refused, not cut short into other names
long="$tmp"; while [ ${#long} -lt 4085 ]; do long="$long/$(printf 'd%.0s' $(seq 1 $((4085 - ${#long} - 1 > 200 ? 200 : 4085 - ${#long} - 1))))"; done
mkdir -p "$long"
check "demo --out too long" bash -c "'$bin/demo' --epochs 1 --out '$long' > '$tmp/last' 2>&1; test \$? = 1 &&
  grep -q 'boundary.png is too long' '$tmp/last' && test -z \"\$(ls '$long')\""

# every example: --help, an unknown option, and --dot
for ex in gradient_descent forward3 logreg mlp demo custom_op rnn attention newton cnn charlm gpt; do
  check "$ex --help" bash -c "'$bin/$ex' --help | grep -q '^usage: $ex'"
  check "$ex bad option" bash -c "'$bin/$ex' --no-such-option > '$tmp/last' 2>&1; test \$? = 2 &&
    grep -q 'unknown option --no-such-option' '$tmp/last'"
done
for ex in gradient_descent forward3 logreg custom_op; do
  check "$ex --dot" bash -c "'$bin/$ex' --dot '$tmp/$ex.dot' > /dev/null && dot -Tsvg '$tmp/$ex.dot' -o /dev/null"
done

# golden pictures: the export is deterministic, so the lessons' graphs must
# match the reviewed files byte for byte (make golden rewrites them)
golden=$(dirname "$0")/golden
check "golden gradient_descent.dot" bash -c "'$bin/gradient_descent' --steps 2 --dot '$tmp/gd.dot' > /dev/null &&
  cmp '$tmp/gd.dot' '$golden/gradient_descent.dot'"
check "golden forward3.dot" bash -c "'$bin/forward3' --dot '$tmp/f3.dot' > /dev/null && cmp '$tmp/f3.dot' '$golden/forward3.dot'"

# every "upstream × local = contribution" a calculator can check: the exact
# product of the printed factors rounds to the printed product (forward3, and
# a logistic regression on 10 rows, whose 8 training examples are shown in full)
awk 'BEGIN { srand(3); print "age,chol,thalach,target";
  for (i = 0; i < 10; i++) { a = 30 + 40 * rand(); c = 150 + 200 * rand(); t = 90 + 100 * rand();
    z = 0.08 * (a - 50) - 0.05 * (t - 140) + 0.4 * (rand() - 0.5);
    printf "%.1f,%.1f,%.1f,%d\n", a, c, t, (z > 0) } }' > "$tmp/heart10.csv"
check "forward3 products a calculator agrees with" bash -c "'$bin/forward3' --dot '$tmp/p3.dot' --html '$tmp/p3.html' > /dev/null &&
  python3 '$(dirname "$0")/check_products.py' '$tmp/p3.dot' '$tmp/p3.html'"
check "small logreg products a calculator agrees with" bash -c "'$bin/logreg' --csv '$tmp/heart10.csv' --epochs 20 \
    --dot '$tmp/lr10.dot' --html '$tmp/lr10.html' > /dev/null &&
  python3 '$(dirname "$0")/check_products.py' '$tmp/lr10.dot' '$tmp/lr10.html' > '$tmp/products' &&
  grep -q 'lr10.dot: 8 products checked' '$tmp/products'"

# logreg names m, the number its formulas use, and ends the sigmoid's edge
# with seed 003's ∂C/∂Z = (A−Y)/m (generated data: 242 training rows)
check "logreg --dot names m" bash -c "'$bin/logreg' --epochs 5 --dot '$tmp/lrm.dot' > /dev/null &&
  grep -qF 'm = 242 examples of n = 13 features' '$tmp/lrm.dot' && grep -qF '(A−Y)/(A(1−A)·242)' '$tmp/lrm.dot' &&
  grep -qF '\\n∂C/∂Z = (A−Y)/m, m = 242\"]' '$tmp/lrm.dot'"
# no rounding noise as data: the standardised X's mean is 0, the labels are counted
check "logreg --dot shows no noise" bash -c "'$bin/logreg' --epochs 5 --dot '$tmp/lrn.dot' > /dev/null &&
  grep -Eq 'label=\"X\\\\n\(m, n\)\\\\nvalue min -[0-9.]+, mean 0, max [0-9.]+\"' '$tmp/lrn.dot' &&
  grep -Eq 'label=\"y\\\\n\(m, 1\)\\\\nvalue counts 0×[0-9]+, 1×[0-9]+\"' '$tmp/lrn.dot' && ! grep -q -- '-0[],]' '$tmp/lrn.dot'"

# --html: a self-contained stepper page, one laid-out SVG and the frames'
# texts as JSON (tests/browser.sh steps through them in Chromium)
for ex in gradient_descent forward3 logreg custom_op; do
  check "$ex --html" bash -c "'$bin/$ex' --html '$tmp/$ex.html' > /dev/null &&
    grep -q 'id=\"frames\"' '$tmp/$ex.html' && test \$(grep -c '<svg' '$tmp/$ex.html') = 1 &&
    ! grep -Eq '(src|href)=\"https?:' '$tmp/$ex.html'"
done

# every tensor a student sees is named: no label, caption or SVG text of the
# cnn, rnn, charlm, mlp and attention pictures calls one by its place on the
# tape ("t50", "which made t5"); node ids (t5 -> op3) are not read
names="python3 '$(dirname "$0")/check_names.py'"
printf 'digraph { t5 [label="X"]; op0 [label="linear"]; t5 -> op0 [label="∂E/∂t5 = 1"]; }\n' > "$tmp/unnamed.dot"
printf 'digraph { t5 [label="X"]; op0 [label="linear"]; t5 -> op0 [label="∂E/∂X = 1, at t=5"]; }\n' > "$tmp/named.dot"
check "check_names finds a tape name, passes ids" bash -c "$names '$tmp/unnamed.dot' > '$tmp/last'; test \$? = 1 &&
  grep -qF 't5 in' '$tmp/last' && $names '$tmp/named.dot' > /dev/null"
for cell in gru elman; do
  check "rnn --cell $cell pictures: every tensor named" bash -c "'$bin/rnn' --cell $cell --iters 20 --dot '$tmp/rnn-$cell.dot' \
      --html '$tmp/rnn-$cell.html' > /dev/null && $names '$tmp/rnn-$cell.dot' '$tmp/rnn-$cell.html' > '$tmp/last' &&
    grep -qF 'h<3>' '$tmp/rnn-$cell.dot' && grep -qF 'x<1>' '$tmp/rnn-$cell.dot' && grep -q 'label=\"step 3\"' '$tmp/rnn-$cell.dot' &&
    grep -q 'id=\"frames\"' '$tmp/rnn-$cell.html' && dot -Tsvg '$tmp/rnn-$cell.dot' -o /dev/null"
done
check "attention --html: every tensor named" bash -c "'$bin/attention' --iters 5 --dot '$tmp/att.dot' --html '$tmp/att.html' > /dev/null &&
  $names '$tmp/att.dot' '$tmp/att.html' > /dev/null && grep -q 'id=\"frames\"' '$tmp/att.html'"
if [ -r /usr/share/dict/words ]; then
  for cell in lstm gru; do
    check "charlm --cell $cell pictures: every tensor named" bash -c "'$bin/charlm' --cell $cell --iters 1 --samples 0 --limit 2000 \
        --dot '$tmp/charlm-$cell.dot' --html '$tmp/charlm-$cell.html' > /dev/null &&
      $names '$tmp/charlm-$cell.dot' '$tmp/charlm-$cell.html' > /dev/null && grep -qF 'h<3>' '$tmp/charlm-$cell.dot' &&
      grep -q 'id=\"frames\"' '$tmp/charlm-$cell.html' && dot -Tsvg '$tmp/charlm-$cell.dot' -o /dev/null"
  done
else
  skipped=$((skipped + 1)); echo "skipped: charlm pictures (apt-get install wamerican)"
fi
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  check "cnn pictures: every tensor named, the files keep PyTorch's names" bash -c "'$bin/cnn' --epochs 1 --train-limit 64 \
      --test-limit 100 --save '$tmp/cnn-names.safetensors' --dot '$tmp/cnn-names.dot' --html '$tmp/cnn-names.html' > '$tmp/cnn-out' 2>&1 &&
    $names '$tmp/cnn-names.dot' '$tmp/cnn-names.html' > /dev/null && grep -qF 'label=\"W[1]\\n(32, 1, 3, 3)' '$tmp/cnn-names.dot' &&
    grep -qF '∂E/∂A[1] = conv_transpose(Ĝ, W[2])' '$tmp/cnn-names.dot' && grep -q 'conv1.weight' '$tmp/cnn-names.safetensors' &&
    ! grep -q 'W\[1\]' '$tmp/cnn-names.safetensors' && grep -q '(the same)' '$tmp/cnn-out'"
  check "mlp pictures: every tensor named" bash -c "'$bin/mlp' --epochs 1 --train-limit 64 --hidden 16 --dot '$tmp/mlp-names.dot' \
      --html '$tmp/mlp-names.html' > /dev/null 2>&1 && $names '$tmp/mlp-names.dot' '$tmp/mlp-names.html' > /dev/null"
else
  skipped=$((skipped + 2)); echo "skipped: cnn and mlp pictures (apt-get install dataset-fashion-mnist)"
fi

# the stepper plays the forward pass first, an op a frame: forward3's values
# appear at their ops, as numpy computes seed 004's network (/usr/bin/python3:
# Debian's, with python3-numpy)
check "forward3 --html: the forward pass, frame by frame, against numpy" bash -c "'$bin/forward3' --html '$tmp/fwd.html' > /dev/null &&
  /usr/bin/python3 '$(dirname "$0")/check_forward_frames.py' '$tmp/fwd.html'"

# with a learning rate the page ends with the update, w ← w − η·grad, with
# numbers a calculator agrees with: gradient descent's step 2 goes to the x
# that the program's step 3 starts from (2.56), the article's first step
# from 5 to 4, logreg's weights (shown in full on 10 rows) by plain SGD
check "gradient_descent --html ends with the update" bash -c "'$bin/gradient_descent' --steps 2 --html '$tmp/gdu.html' > /dev/null &&
  grep -qF 'update x ← 3.2 − 0.1 × 6.4 = 2.56' '$tmp/gdu.html' && '$bin/gradient_descent' --steps 3 | grep -Eq '^ +3 +2\.560000 ' &&
  python3 '$(dirname "$0")/check_update.py' '$tmp/gdu.html' 0.1 > /dev/null &&
  '$bin/gradient_descent' --steps 0 --html '$tmp/gdu0.html' > /dev/null && grep -qF 'update x ← 5 − 0.1 × 10 = 4' '$tmp/gdu0.html'"
check "logreg --html ends with the update" bash -c "'$bin/logreg' --csv '$tmp/heart10.csv' --epochs 20 --html '$tmp/lru.html' > /dev/null &&
  python3 '$(dirname "$0")/check_update.py' '$tmp/lru.html' 0.5 > '$tmp/last' && grep -q '4 updated numbers checked' '$tmp/last' &&
  ! python3 '$(dirname "$0")/check_update.py' '$tmp/lru.html' 0.4 > /dev/null"

check "demo --html" bash -c "'$bin/demo' --epochs 3 --out '$tmp/d2' --html '$tmp/demo.html' > /dev/null 2>&1 &&
  grep -q 'id=\"frames\"' '$tmp/demo.html' && grep -q 'layer 1' '$tmp/demo.html'"

line="examples: $passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
