"""Attention views of an explanation: a self-contained HTML page (head view + model view, as bertviz draws
them, with every script and style inlined) and a PNG of all layers x heads.

    explanation = nlpforge.load("models/stars").explain("Loved it")[0]
    Path("view.html").write_text(render_html(explanation, "stars: Loved it"))
    render_png(explanation, "view.png")

The head view draws, for one layer, a line from each token on the left to each token on the right whose
opacity is the attention weight, one colour per head (toggle heads; click a token to see only its lines).
The model view is the grid of every layer x head; click a cell to open it in the head view. The token
attributions colour the words (green pushed towards the answer, red away).
"""
import html
import json
from pathlib import Path

from nlpforge.errors import InputError

COLORS = ["#2f5d8a", "#d1495b", "#3a9a5b", "#edae49", "#7b4fa0", "#00798c", "#8a5a2f", "#e07bb5", "#5b8c5a",
          "#c05746", "#4f6d7a", "#b8860b"]

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 12px; color: #1d232b; }
h2 { font-size: 16px; margin: 16px 0 6px; }
.note { background: #fff7e0; padding: 6px 10px; border-left: 3px solid #a15c00; }
.attributions span { padding: 1px 3px; margin: 1px; border-radius: 3px; display: inline-block; }
.controls { margin: 6px 0; }
.controls label { margin-right: 10px; }
.head-view svg text { font-size: 12px; cursor: pointer; }
.head-view svg text.selected { font-weight: 700; }
.model-view { display: grid; gap: 4px; }
.model-view .cell { cursor: pointer; border: 2px solid transparent; }
.model-view .cell.selected { border-color: #1d232b; }
.model-view .axis { font-size: 11px; color: #5d6b7a; align-self: center; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("explanation-data").textContent);
  var att = data.attention, colors = data.colors, NS = "http://www.w3.org/2000/svg";
  var state = {layer: att.layers - 1, heads: att.weights[0].map(function () { return true; }), token: null};
  var layerSelect = document.getElementById("layer"), headBox = document.getElementById("heads");

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }

  for (var l = 0; l < att.layers; l++) {
    var option = document.createElement("option");
    option.value = l; option.textContent = "layer " + ((att.first_layer || 0) + l);
    layerSelect.appendChild(option);
  }
  att.weights[0].forEach(function (_, h) {
    var label = document.createElement("label"), box = document.createElement("input");
    box.type = "checkbox"; box.checked = true; box.className = "head-toggle"; box.dataset.head = h;
    box.addEventListener("change", function () { state.heads[h] = box.checked; drawHeadView(); });
    label.style.color = colors[h % colors.length];
    label.appendChild(box); label.appendChild(document.createTextNode(" head " + h));
    headBox.appendChild(label);
  });
  layerSelect.addEventListener("change", function () { state.layer = Number(layerSelect.value); drawHeadView(); });

  function drawHeadView() {
    var svg = document.getElementById("head-svg"), tokens = att.tokens, row = 20, width = 520;
    svg.innerHTML = "";
    svg.setAttribute("viewBox", "0 0 " + width + " " + (tokens.length * row + 10));
    svg.setAttribute("height", tokens.length * row + 10);
    svg.dataset.layer = state.layer;
    var left = 150, right = width - 150, lines = el("g", {"class": "edges"}, svg);
    state.heads.forEach(function (on, h) {
      if (!on) return;
      att.weights[state.layer][h].forEach(function (weights, i) {
        if (state.token !== null && state.token !== i) return;
        weights.forEach(function (w, j) {
          if (w < 0.01) return;
          el("line", {x1: left + 4, y1: 10 + i * row + 5, x2: right - 4, y2: 10 + j * row + 5, "class": "edge",
                      stroke: colors[h % colors.length], "stroke-width": 2, "stroke-opacity": w.toFixed(3)}, lines);
        });
      });
    });
    tokens.forEach(function (token, i) {
      var a = el("text", {x: left - 4, y: 10 + i * row + 9, "text-anchor": "end", "class": "token left"}, svg);
      a.textContent = token; a.dataset.index = i;
      if (state.token === i) a.setAttribute("class", "token left selected");
      a.addEventListener("click", function () { state.token = state.token === i ? null : i; drawHeadView(); });
      var b = el("text", {x: right + 4, y: 10 + i * row + 9, "class": "token right"}, svg);
      b.textContent = token;
    });
    document.querySelectorAll(".model-view .cell").forEach(function (cell) {
      var on = Number(cell.dataset.layer) === state.layer && state.heads[Number(cell.dataset.head)] &&
               state.heads.filter(Boolean).length === 1;
      cell.classList.toggle("selected", on);
    });
  }

  function drawModelView() {
    document.querySelectorAll(".model-view .cell").forEach(function (canvas) {
      var l = Number(canvas.dataset.layer), h = Number(canvas.dataset.head), matrix = att.weights[l][h];
      var ctx = canvas.getContext("2d"), step = canvas.width / matrix.length;
      ctx.fillStyle = colors[h % colors.length];
      matrix.forEach(function (weights, i) {
        weights.forEach(function (w, j) {
          ctx.globalAlpha = Math.min(1, w);
          ctx.fillRect(j * step, i * step, Math.ceil(step), Math.ceil(step));
        });
      });
      canvas.addEventListener("click", function () {
        state.layer = l; layerSelect.value = l;
        state.heads = state.heads.map(function (_, k) { return k === h; });
        document.querySelectorAll(".head-toggle").forEach(function (box) {
          box.checked = Number(box.dataset.head) === h;
        });
        drawHeadView();
      });
    });
  }

  layerSelect.value = state.layer;
  drawModelView();
  drawHeadView();
})();
"""


def check_explanation(explanation) -> dict:
    if not isinstance(explanation, dict) or not isinstance(explanation.get("attention"), dict) \
            or not explanation["attention"].get("weights"):
        raise InputError("not an explanation with attention weights: give one dict of "
                         "nlpforge.load(folder).explain(text)")
    return explanation["attention"]


def answer_summary(explanation: dict) -> str:
    """One line that says what the model answered, whatever the task."""
    if "label" in explanation:
        return f"label {explanation['label']} (score {explanation.get('score', 0):.3f})"
    if "answer" in explanation:
        return f"answer {explanation['answer']!r} (score {explanation.get('score', 0):.3f})"
    if "entities" in explanation:
        found = ", ".join(f"{e['entity']}: {e['word']}" for e in explanation["entities"]) or "none"
        return f"entities {found}"
    return ""


def attribution_color(value: float) -> str:
    strength = min(1.0, abs(value))
    return f"rgba(30, 123, 52, {strength:.2f})" if value >= 0 else f"rgba(179, 38, 30, {strength:.2f})"


def model_view(attention: dict) -> str:
    """The grid of every layer x head: one canvas per cell, which the script paints and makes clickable."""
    heads, first = attention["heads"], attention.get("first_layer", 0)
    rows = ['<span></span>'] + [f'<span class="axis">head {h}</span>' for h in range(heads)]
    for layer in range(attention["layers"]):
        rows.append(f'<span class="axis">layer {first + layer}</span>')
        rows += [f'<canvas class="cell" width="80" height="80" data-layer="{layer}" data-head="{head}" '
                 f'title="layer {first + layer}, head {head}"></canvas>' for head in range(heads)]
    return (f'<div class="model-view" id="model-view" style="grid-template-columns: 60px repeat({heads}, 84px)">'
            + "".join(rows) + "</div>")


def render_html(explanation: dict, title: str = "attention") -> str:
    """A single HTML file (no external resources) with the answer, the attributions, the head view and the
    model view of one explanation."""
    attention = check_explanation(explanation)
    words = explanation.get("words") or attention["tokens"]
    importances = explanation.get("importances") or [0.0] * len(words)
    spans = "".join(f'<span title="{value:+.3f}" style="background:{attribution_color(value)}">'
                    f"{html.escape(word)}</span>" for word, value in zip(words, importances))
    note = f'<p class="note" id="note">{html.escape(attention["note"])}</p>' if attention.get("note") else ""
    payload = json.dumps({"attention": attention, "colors": COLORS}).replace("<", "\\u003c")
    delta = explanation.get("delta")
    convergence = "" if delta is None else f", convergence delta {delta:.4f}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h2>{html.escape(title)}</h2>
<p class="answer">{html.escape(answer_summary(explanation))}</p>
{note}
<h2>Token attributions</h2>
<p class="attributions" id="attributions">{spans}</p>
<p class="muted">Integrated Gradients on the word embeddings{convergence}.</p>
<h2>Head view</h2>
<div class="head-view"><div class="controls"><select id="layer"></select> <span id="heads"></span></div>
<svg id="head-svg" width="520"></svg></div>
<h2>Model view ({attention["layers"]} layers x {attention["heads"]} heads)</h2>
{model_view(attention)}
<script type="application/json" id="explanation-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""


def render_png(explanation: dict, path, title: str = "attention") -> Path:
    """A PNG: the grid of every layer x head's attention, with the token attributions above it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attention = check_explanation(explanation)
    layers, heads, tokens = attention["layers"], attention["heads"], attention["tokens"]
    size = max(1.6, min(3.2, 0.18 * len(tokens)))
    figure, axes = plt.subplots(layers + 1, heads, figsize=(size * heads + 1, size * (layers + 1)), squeeze=False,
                                gridspec_kw={"height_ratios": [0.45] + [1] * layers})
    for axis in axes[0]:
        axis.axis("off")
    words = explanation.get("words") or tokens
    importances = np.array(explanation.get("importances") or [0.0] * len(words))
    top = axes[0][0]
    top.bar(range(len(words)), importances, color=["#1e7b34" if v >= 0 else "#b3261e" for v in importances])
    top.axis("on")
    top.set_xticks(range(len(words)), words, rotation=90, fontsize=7)
    top.set_title(f"{title}: {answer_summary(explanation)}", fontsize=9, loc="left")
    for layer in range(layers):
        for head in range(heads):
            axis = axes[layer + 1][head]
            axis.imshow(np.array(attention["weights"][layer][head]), cmap="Blues", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"layer {attention.get('first_layer', 0) + layer}, head {head}", fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def check_one_input(text, text_pair) -> None:
    """An explanation is of one text (or question) and, for pairs, one second text (or context)."""
    for what, value in (("text", text), ("text_pair", text_pair)):
        if value is None and what == "text_pair":
            continue
        if not isinstance(value, str):
            raise InputError(f"an explanation is of one input: give the {what} as a string, not a "
                             f"{type(value).__name__}; for several texts call nlpforge.load(path).explain(texts)")
    if not text.strip():
        raise InputError("the text to explain is empty; give the text (or question) as the argument")


def explain_text(loaded, text: str, text_pair: str | None = None, steps: int = 32) -> dict:
    """The explanation of one text (or text pair) by a loaded model; for question answering `text` is the
    question and `text_pair` the context."""
    check_one_input(text, text_pair)
    if loaded.task.name == "question-answering":
        if not text_pair:
            raise InputError("a question-answering model explains a question with its context: give --text-pair "
                             "CONTEXT")
        value = {"question": text, "context": text_pair}
    else:  # the task checks that a pair goes to a model of pairs, and one text to a model of one
        value = {"text": text, "text_pair": text_pair} if text_pair else text
    return loaded.explain([value], steps=steps)[0]


def explain_model(folder, text: str, text_pair: str | None = None, html_path=None, png_path=None,
                  steps: int = 32) -> dict:
    """Explain one input with the model in `folder` (see `explain_text`) and write the HTML view and PNG
    when asked; returns the explanation."""
    from nlpforge.settings import IMAGE_SUFFIXES, check_apart, check_suffix, check_writable
    from nlpforge.tasks import load

    for path, flag, suffixes in ((html_path, "--output", (".html", ".htm")), (png_path, "--png", IMAGE_SUFFIXES)):
        if path is not None:
            check_suffix(path, flag, suffixes)
            check_apart(path, [folder], flag)
            check_writable(path, flag, folder=False)
    check_one_input(text, text_pair)  # before the model loads
    explanation = explain_text(load(folder), text, text_pair, steps)
    title = f"{Path(folder).name}: {text[:80]}"
    for path in (html_path, png_path):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if html_path is not None:
        Path(html_path).write_text(render_html(explanation, title), encoding="utf-8")
    if png_path is not None:
        render_png(explanation, png_path, title)
    return explanation
