/* nlpforge ui charts: small SVG line, scatter, bar and heatmap charts, no dependencies.
 *
 *   <div class="chart" data-kind="line" data-json='{"series": [{"name": "loss", "points": [[1, 0.7], [2, 0.5]]}]}'>
 *
 * kinds: line / scatter {series: [{name, points: [[x, y], ...], kind?}]} (a series' own kind, "line" or "scatter",
 * overrides the chart's), bar {labels: [...], values: [...]},
 * heatmap {rows: [...], cols: [...], values: [[...]]}. Every chart found on load is drawn; call
 * nfCharts.render(element) after changing data-json to redraw one.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var COLORS = ["#2f5d8a", "#d1495b", "#3a9a5b", "#edae49", "#7b4fa0", "#00798c", "#8a5a2f", "#e07bb5"];

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, value, attrs) {
    var node = el("text", Object.assign({x: x, y: y}, attrs || {}), parent);
    node.textContent = value;
    return node;
  }

  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
    return Number(v.toPrecision(4)).toString();
  }

  function extent(values) {
    var lo = Math.min.apply(null, values), hi = Math.max.apply(null, values);
    if (!isFinite(lo)) return [0, 1];
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
    return [lo, hi];
  }

  function ticks(lo, hi, count) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count)));
    var err = (hi - lo) / count / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
    return out;
  }

  function frame(box, height) {
    box.innerHTML = "";
    var width = Math.max(box.clientWidth || 0, 320);
    var svg = el("svg", {viewBox: "0 0 " + width + " " + height, "class": "plot", role: "img"}, box);
    return {svg: svg, width: width, height: height};
  }

  function noData(f, message) {
    text(f.svg, f.width / 2, f.height / 2, message || "no data yet", {"class": "no-data", "text-anchor": "middle"});
    f.svg.setAttribute("data-empty", "true");
  }

  function xy(box, data, height, dots) {
    var f = frame(box, height);
    var series = (data.series || []).filter(function (s) { return s.points && s.points.length; });
    if (!series.length) return noData(f);
    var m = {l: 56, r: 12, t: 10, b: 34 + 16 * Math.ceil(series.length / 4)};
    var xs = [], ys = [];
    series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p[0]); ys.push(p[1]); }); });
    var xr = extent(xs), yr = extent(ys);
    var w = f.width - m.l - m.r, h = height - m.t - m.b;
    var sx = function (v) { return m.l + (v - xr[0]) / (xr[1] - xr[0]) * w; };
    var sy = function (v) { return m.t + h - (v - yr[0]) / (yr[1] - yr[0]) * h; };
    var axis = el("g", {"class": "axis"}, f.svg);
    ticks(yr[0], yr[1], 5).forEach(function (t) {
      el("line", {x1: m.l, x2: m.l + w, y1: sy(t), y2: sy(t), "class": "grid-line"}, axis);
      text(axis, m.l - 6, sy(t) + 4, fmt(t), {"text-anchor": "end"});
    });
    ticks(xr[0], xr[1], Math.max(2, Math.floor(w / 80))).forEach(function (t) {
      text(axis, sx(t), m.t + h + 14, fmt(t), {"text-anchor": "middle"});
    });
    el("line", {x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h}, axis);
    el("line", {x1: m.l, x2: m.l, y1: m.t, y2: m.t + h}, axis);
    if (box.dataset.xLabel) text(axis, m.l + w, m.t + h + 28, box.dataset.xLabel, {"text-anchor": "end"});
    if (box.dataset.yLabel) text(axis, 12, m.t + h / 2, box.dataset.yLabel,
                                 {"text-anchor": "middle", transform: "rotate(-90 12 " + (m.t + h / 2) + ")"});
    series.forEach(function (s, i) {
      var color = s.color || COLORS[i % COLORS.length];
      var group = el("g", {"class": "series", "data-name": s.name, "data-points": s.points.length}, f.svg);
      if ((s.kind ? s.kind === "scatter" : dots) || s.points.length === 1) {
        s.points.forEach(function (p) {
          var dot = el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3.5, fill: color}, group);
          el("title", {}, dot).textContent = s.name + ": " + fmt(p[1]) + " at " + fmt(p[0]);
        });
      } else {
        var d = s.points.map(function (p, k) { return (k ? "L" : "M") + sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
        el("path", {d: d.join(""), fill: "none", stroke: color, "stroke-width": 1.8}, group);
      }
    });
    var legend = el("g", {"class": "legend"}, f.svg);
    series.forEach(function (s, i) {
      var x = m.l + (i % 4) * (w / 4), y = height - m.b + 30 + 16 * Math.floor(i / 4);
      el("rect", {x: x, y: y - 9, width: 10, height: 10, fill: s.color || COLORS[i % COLORS.length]}, legend);
      text(legend, x + 14, y, s.name);
    });
  }

  function bar(box, data, height) {
    var labels = data.labels || [], values = data.values || [];
    var f = frame(box, Math.max(height, 22 * labels.length + 20));
    if (!labels.length) return noData(f);
    var m = {l: Math.min(220, 12 + 7 * Math.max.apply(null, labels.map(function (l) { return String(l).length; }))),
             r: 60};
    var hi = Math.max.apply(null, values.map(Math.abs)) || 1;
    var w = f.width - m.l - m.r, g = el("g", {"class": "series", "data-points": labels.length}, f.svg);
    labels.forEach(function (label, i) {
      var y = 10 + i * 22, v = values[i], bw = Math.abs(v) / hi * w;
      text(g, m.l - 6, y + 12, label, {"text-anchor": "end", "class": "bar-label"});
      el("rect", {x: m.l, y: y, width: Math.max(bw, 1), height: 16, fill: v < 0 ? COLORS[1] : COLORS[0]}, g);
      text(g, m.l + bw + 4, y + 12, fmt(v), {"class": "bar-value"});
    });
  }

  function heatmap(box, data, height) {
    var rows = data.rows || [], cols = data.cols || [], values = data.values || [];
    var cell = Math.max(22, Math.min(60, Math.floor(((box.clientWidth || 400) - 90) / Math.max(cols.length, 1))));
    var f = frame(box, Math.max(height, cell * rows.length + 50));
    if (!rows.length) return noData(f);
    var flat = [].concat.apply([], values), hi = Math.max.apply(null, flat) || 1, m = {l: 80, t: 30};
    var g = el("g", {"class": "series", "data-points": flat.length}, f.svg);
    cols.forEach(function (c, j) { text(g, m.l + j * cell + cell / 2, m.t - 8, c, {"text-anchor": "middle"}); });
    rows.forEach(function (r, i) {
      text(g, m.l - 6, m.t + i * cell + cell / 2 + 4, r, {"text-anchor": "end"});
      cols.forEach(function (c, j) {
        var v = (values[i] || [])[j] || 0, a = v / hi;
        el("rect", {x: m.l + j * cell, y: m.t + i * cell, width: cell - 1, height: cell - 1,
                    fill: "rgba(47, 93, 138, " + (0.08 + 0.92 * a).toFixed(3) + ")", "class": "cell"}, g);
        text(g, m.l + j * cell + cell / 2, m.t + i * cell + cell / 2 + 4, fmt(v),
             {"text-anchor": "middle", fill: a > 0.5 ? "#fff" : "#1d232b", "font-size": 11});
      });
    });
  }

  function render(box) {
    var data;
    try { data = JSON.parse(box.dataset.json || "{}"); } catch (e) { data = {}; }
    var height = Number(box.dataset.height) || 220, kind = box.dataset.kind;
    if (kind === "bar") bar(box, data, height);
    else if (kind === "heatmap") heatmap(box, data, height);
    else xy(box, data, height, kind === "scatter");
    box.setAttribute("data-rendered", "true");
  }

  function renderAll(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll(".chart"), render);
  }

  window.nfCharts = {render: render, renderAll: renderAll};
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { renderAll(); });
  else renderAll();
})();
