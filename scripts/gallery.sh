#!/usr/bin/env bash
# Builds the gallery (make docs): each lesson's graph and backward stepper
# page, and an index page linking them, in DIR (default build/docs).
set -eu
bin=${1:-build}/examples
out=${2:-build/docs}
mkdir -p "$out"
"$bin/gradient_descent" --steps 3 --dot "$out/gradient_descent.dot" --html "$out/gradient_descent.html" > /dev/null
"$bin/forward3" --dot "$out/forward3.dot" --html "$out/forward3.html" > /dev/null
"$bin/logreg" --epochs 200 --dot "$out/logreg.dot" --html "$out/logreg.html" > /dev/null
"$bin/demo" --out "$out/demo" > /dev/null 2>&1
cp "$out/demo/graph.dot" "$out/demo.dot"
cp "$out/demo/backward.html" "$out/demo.html"
lessons="gradient_descent forward3 logreg demo"
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$bin/mlp" --epochs 1 --train-limit 2000 --hidden 32 --save "$out/mlp.nbp" \
    --dot "$out/mlp.dot" --html "$out/mlp.html" > /dev/null 2>&1
  lessons="$lessons mlp"
fi
for l in $lessons; do dot -Tsvg "$out/$l.dot" -o "$out/$l.svg"; done
{
  echo '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>nabla gallery</title>'
  echo '<style>body{font-family:Helvetica,Arial,sans-serif;margin:2em;max-width:70em}'
  echo 'li{margin:0.6em 0}</style></head><body><h1>nabla: the lessons, drawn</h1>'
  echo '<p>Each lesson of the seed articles as a graph (values, gradients and the chain rule on the'
  echo 'edges) and as a page that steps through its backward pass.</p><ul>'
  for l in $lessons; do
    case $l in
      gradient_descent) what="Gradient descent on y = x&sup2; + 3 (seed 003)" ;;
      forward3) what="The three-layer network of seed 004, backpropagating its error" ;;
      logreg) what="Logistic regression, one sigmoid neuron (seed 003)" ;;
      demo) what="The demo: a two-layer tanh network on two spirals" ;;
      mlp) what="The multi-layer perceptron of seeds 000 and 001 on Fashion-MNIST" ;;
    esac
    echo "<li>$what: <a href=\"$l.html\">backward, step by step</a> &middot; <a href=\"$l.svg\">graph</a></li>"
  done
  echo '</ul><p><img src="demo/boundary.png" alt="the demo decision boundary" width="300"></p></body></html>'
} > "$out/index.html"
echo "gallery written to $out/index.html"
