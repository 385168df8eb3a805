#!/usr/bin/env bash
# Builds the gallery (make docs) in DIR (default build/docs): for each lesson,
# its backward stepper page and its whole graph (an SVG shown inside a page
# that scales it to the window, so no picture is wider than the screen), and
# an index page for students.
set -eu
bin=${1:-build}/examples
out=${2:-build/docs}
mkdir -p "$out"

"$bin/gradient_descent" --steps 0 --dot "$out/gradient_descent.dot" --html "$out/gradient_descent.html" > /dev/null
"$bin/forward3" --dot "$out/forward3.dot" --html "$out/forward3.html" > /dev/null
"$bin/logreg" --epochs 200 --dot "$out/logreg.dot" --html "$out/logreg.html" > /dev/null
"$bin/newton" --dot "$out/newton.dot" --html "$out/newton.html" > /dev/null
"$bin/custom_op" --dot "$out/custom_op.dot" --html "$out/custom_op.html" > /dev/null
"$bin/demo" --out "$out/demo" > /dev/null 2>&1
cp "$out/demo/graph.dot" "$out/demo.dot"
cp "$out/demo/backward.html" "$out/demo.html"
"$bin/rnn" --iters 300 --dot "$out/rnn.dot" --html "$out/rnn.html" > /dev/null
"$bin/attention" --iters 300 --dot "$out/attention.dot" --html "$out/attention.html" > /dev/null
lessons="gradient_descent forward3 logreg"
if [ -r /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$bin/mlp" --epochs 1 --train-limit 2000 --hidden 32 --save "$out/mlp.nbp" \
    --dot "$out/mlp.dot" --html "$out/mlp.html" > /dev/null 2>&1
  "$bin/cnn" --epochs 1 --train-limit 640 --test-limit 500 --save "$out/cnn.nbp" \
    --dot "$out/cnn.dot" --html "$out/cnn.html" > /dev/null 2>&1
  lessons="$lessons mlp cnn"
fi
lessons="$lessons demo rnn attention"
if [ -r /usr/share/dict/words ]; then
  "$bin/charlm" --iters 1 --samples 0 --limit 5000 --dot "$out/charlm.dot" --html "$out/charlm.html" > /dev/null
  lessons="$lessons charlm"
fi
lessons="$lessons newton custom_op"

describe() {
  case $1 in
    gradient_descent) echo "Gradient descent on y = x&sup2; + 3: the derivative 2x at the first step, x = 5, and why x walks 5, 4, 3.2, ..." ;;
    forward3) echo "A three-layer network, three nodes a layer: backpropagating its error E" ;;
    logreg) echo "Logistic regression, one sigmoid neuron: A = &sigma;(W X&#7488; + b) and its cost C" ;;
    mlp) echo "A multi-layer perceptron on Fashion-MNIST: layers, shapes (n[l], m) and the gradient of each layer" ;;
    cnn) echo "A convolutional network on Fashion-MNIST: A[l] from W[l] and b[l], layer by layer, on 2 images" ;;
    rnn) echo "A GRU unrolled over 3 time steps: the gradient through time, each weight summing its 3 uses" ;;
    attention) echo "One causal self-attention block: scores S = QK&#7488;, the mask, A = softmax(S), and their gradients" ;;
    charlm) echo "An LSTM reading &quot;hi&quot; one character a step: the gradient through its gates and its cell state" ;;
    demo) echo "A two-layer tanh network on two spirals, on three points whose numbers you can check by hand" ;;
    newton) echo "Newton's method: the derivative is a graph too, and backward through it gives the second derivative" ;;
    custom_op) echo "Softplus defined as a new op: what your own op looks like in the pictures" ;;
  esac
}

head_html() { # title
  echo '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
  echo '<meta name="viewport" content="width=device-width">'
  echo "<title>$1</title>"
  echo '<style>body{font-family:Helvetica,Arial,sans-serif;margin:1.5em;font-size:18px;line-height:1.4}'
  echo 'img{max-width:100%;height:auto;display:block;margin:1em 0}li{margin:0.7em 0}'
  echo 'main{max-width:60em}</style></head><body>'
}

for l in $lessons; do
  dot -Tsvg "$out/$l.dot" -o "$out/$l.svg"
  {
    head_html "$(describe "$l" | sed 's/<[^>]*>//g')"
    echo "<p><a href=\"index.html\">&larr; all lessons</a> &middot; <a href=\"$l.html\">backward, step by step</a></p>"
    echo "<h1>$(describe "$l")</h1>"
    echo "<img src=\"$l.svg\" alt=\"the graph of the lesson $l\">"
    # for tests/browser.sh: how wide the page is against the window
    echo '<pre id="fit" hidden></pre><script>window.addEventListener("load", function () {'
    echo '  document.getElementById("fit").textContent = "page " + document.documentElement.scrollWidth +'
    echo '    " window " + window.innerWidth; });</script>'
    echo '</body></html>'
  } > "$out/$l.graph.html"
done

{
  head_html "nabla: backpropagation, drawn"
  echo '<main><h1>Backpropagation, drawn</h1>'
  echo '<p>Each lesson is a small program. Its graph shows every value, every gradient and, on each'
  echo 'edge, the chain rule that carries the gradient back: upstream &times; local = contribution.'
  echo 'The step-by-step page walks the backward pass one operation at a time, in the order the'
  echo 'computer does it (arrow keys, or the buttons; + and &minus; zoom).</p><ul>'
  for l in $lessons; do
    echo "<li>$(describe "$l"):<br><a href=\"$l.html\">backward, step by step</a> &middot;"
    echo "<a href=\"$l.graph.html\">the whole graph</a></li>"
  done
  echo '</ul><p>What the two-spirals network learned:</p>'
  echo '<img src="demo/boundary.png" alt="the decision boundary of the two-spirals network" width="300">'
  echo '</main></body></html>'
} > "$out/index.html"
echo "gallery written to $out/index.html"
