// Small SVG charts for the dashboard: line chart, grouped bars, scatter with a log-scale x axis
// and a reliability diagram. No dependencies; every chart replaces the content of a container
// element with one <svg> whose size follows the container's width.

const SVG_NS = "http://www.w3.org/2000/svg";
const MARGIN = { top: 30, right: 16, bottom: 42, left: 52 };

export const PALETTE = [
  "#2563eb", "#d97706", "#dc2626", "#0f766e", "#7c3aed", "#db2777", "#4b5563", "#65a30d",
];
export const GROUP_COLORS = {
  many: "#2563eb", medium: "#d97706", few: "#dc2626", overall: "#334155",
};

function el(tag, attrs = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  if (text !== null) node.textContent = text;
  return node;
}

function title(node, text) {
  node.appendChild(el("title", {}, text));
  return node;
}

function frame(container, height, cls, left = MARGIN.left) {
  const width = Math.max(280, Math.round(container.clientWidth || 560));
  const svg = el("svg", {
    class: `chart ${cls}`, width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
  });
  container.replaceChildren(svg);
  return {
    svg, width, height,
    x0: left, x1: width - MARGIN.right, y0: height - MARGIN.bottom, y1: MARGIN.top,
  };
}

function emptyState(f, message) {
  f.svg.appendChild(el("text", {
    x: (f.x0 + f.x1) / 2, y: (f.y0 + f.y1) / 2, class: "chart-empty", "text-anchor": "middle",
  }, message));
}

/** Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten. */
export function niceTicks(lo, hi, count = 5) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (hi === lo) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return out;
}

export function formatNumber(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(1).replace("e+", "e");
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return Number.isInteger(v) ? String(v) : v.toFixed(1);
  return String(Number(v.toPrecision(3)));
}

/** One number format for a whole axis, with as many decimals as its tick step needs. */
function tickFormatter(ticks) {
  if (ticks.length < 2) return formatNumber;
  const step = Math.abs(ticks[1] - ticks[0]);
  const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  const big = Math.max(...ticks.map(Math.abs)) >= 1e5;
  if (decimals > 4 || big) {
    return (v) => (v === 0 ? "0" : v.toExponential(1).replace(".0e", "e").replace("e+", "e"));
  }
  return (v) => (v === 0 ? "0" : v.toFixed(decimals));
}

function linear(d0, d1, r0, r1) {
  const span = d1 - d0 || 1;
  return (v) => r0 + ((v - d0) / span) * (r1 - r0);
}

function axes(f, xTicks, yTicks, sx, sy, opts) {
  const g = el("g", { class: "axes" });
  const yFormat = opts.yFormat || tickFormatter(yTicks);
  const xFormat = opts.xFormat || tickFormatter(xTicks.map((t) => t.value ?? t));
  for (const t of yTicks) {
    const y = sy(t);
    g.appendChild(el("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "grid" }));
    g.appendChild(el("text", { x: f.x0 - 6, y: y + 4, "text-anchor": "end", class: "tick" },
      yFormat(t)));
  }
  for (const t of xTicks) {
    const x = sx(t.value ?? t);
    g.appendChild(el("line", { x1: x, x2: x, y1: f.y0, y2: f.y0 + 4, class: "tick-mark" }));
    g.appendChild(el("text", { x, y: f.y0 + 17, "text-anchor": "middle", class: "tick" },
      t.label ?? xFormat(t)));
  }
  g.appendChild(el("line", { x1: f.x0, x2: f.x1, y1: f.y0, y2: f.y0, class: "axis" }));
  g.appendChild(el("line", { x1: f.x0, x2: f.x0, y1: f.y0, y2: f.y1, class: "axis" }));
  if (opts.xLabel) {
    g.appendChild(el("text", {
      x: (f.x0 + f.x1) / 2, y: f.height - 6, "text-anchor": "middle", class: "axis-label",
    }, opts.xLabel));
  }
  if (opts.yLabel) {
    g.appendChild(el("text", {
      x: 12, y: (f.y0 + f.y1) / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 12 ${(f.y0 + f.y1) / 2})`,
    }, opts.yLabel));
  }
  f.svg.appendChild(g);
}

function legend(f, items) {
  const g = el("g", { class: "legend" });
  let x = f.x0;
  for (const item of items) {
    const entry = el("g", { transform: `translate(${x} 12)` });
    entry.appendChild(el("rect", { x: 0, y: -8, width: 10, height: 10, rx: 2, fill: item.color }));
    const label = el("text", { x: 14, y: 1, class: "legend-label" }, item.name);
    entry.appendChild(label);
    g.appendChild(entry);
    x += 30 + item.name.length * 6.8;
  }
  f.svg.appendChild(g);
}

/**
 * Line chart.
 * series: [{name, color, points: [[x, y], ...]}]; options: xLabel, yLabel, yDomain [lo, hi],
 * yFormat, xFormat, height, integerX (ticks at whole numbers only).
 */
export function lineChart(container, series, opts = {}) {
  const all = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[1])));
  if (!all.length) {
    const f = frame(container, opts.height || 240, "line-chart");
    emptyState(f, opts.empty || "no data yet");
    return f.svg;
  }
  let [ylo, yhi] = opts.yDomain || [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (!opts.yDomain) {
    const pad = (yhi - ylo) * 0.08 || Math.abs(yhi) * 0.1 || 1;
    ylo = ylo >= 0 && ylo - pad < 0 ? 0 : ylo - pad;
    yhi += pad;
  }
  const yTicks = niceTicks(ylo, yhi, 5);
  if (!opts.yDomain) { ylo = Math.min(ylo, yTicks[0]); yhi = Math.max(yhi, yTicks.at(-1)); }
  // room for the widest tick label left of the axis, and the axis title left of that
  const labelChars = Math.max(...yTicks.map((t) => (opts.yFormat || tickFormatter(yTicks))(t).length));
  const f = frame(container, opts.height || 240, "line-chart", Math.max(MARGIN.left, 30 + labelChars * 6.6));
  let [xlo, xhi] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  if (xlo === xhi) { xlo -= 0.5; xhi += 0.5; }
  let xTicks = niceTicks(xlo, xhi, Math.min(8, Math.max(2, Math.floor((f.x1 - f.x0) / 70))));
  if (opts.integerX) xTicks = xTicks.filter((t) => Number.isInteger(t));
  const sx = linear(xlo, xhi, f.x0, f.x1);
  const sy = linear(ylo, yhi, f.y0, f.y1);
  axes(f, xTicks, yTicks, sx, sy, opts);
  const plot = el("g", { class: "plot" });
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    if (!pts.length) continue;
    const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    plot.appendChild(el("path", {
      d, class: "series-line", stroke: s.color, "data-series": s.name, "data-points": pts.length,
    }));
    if (pts.length <= 80) {
      for (const p of pts) {
        const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.8, fill: s.color, class: "dot" });
        plot.appendChild(title(dot, `${s.name}: ${formatNumber(p[1])} at ${opts.xLabel || "x"} ${formatNumber(p[0])}`));
      }
    }
  }
  f.svg.appendChild(plot);
  legend(f, series.filter((s) => s.points.length));
  return f.svg;
}

/**
 * Grouped bar chart.
 * groups: category labels; series: [{name, color, values: [number|null per group], colors?:
 * [a colour per group, for a single series]}];
 * options: yMax, yLabel, height, valueFormat.
 */
export function barChart(container, groups, series, opts = {}) {
  const f = frame(container, opts.height || 240, "bar-chart");
  const values = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  if (!values.length) { emptyState(f, opts.empty || "no results yet"); return f.svg; }
  const yhi = opts.yMax ?? Math.max(...values) * 1.15;
  const yTicks = niceTicks(0, yhi, 5);
  const sy = linear(0, Math.max(yhi, yTicks.at(-1)), f.y0, f.y1);
  const band = (f.x1 - f.x0) / groups.length;
  const inner = band * 0.78;
  const barW = Math.min(46, inner / series.length);
  const sx = (i) => f.x0 + band * (i + 0.5);
  axes(f, groups.map((g, i) => ({ value: i, label: g })), yTicks, sx, sy, opts);
  const plot = el("g", { class: "plot" });
  const fmt = opts.valueFormat || ((v) => v.toFixed(1));
  groups.forEach((group, gi) => {
    const start = sx(gi) - (barW * series.length) / 2;
    series.forEach((s, si) => {
      const v = s.values[gi];
      const x = start + si * barW;
      if (!Number.isFinite(v)) {
        plot.appendChild(el("text", { x: x + barW / 2, y: f.y0 - 5, "text-anchor": "middle", class: "bar-value muted" }, "n/a"));
        return;
      }
      const y = sy(v);
      const bar = el("rect", {
        x: x + 1, y, width: Math.max(1, barW - 2), height: Math.max(0, f.y0 - y), rx: 2,
        fill: s.colors?.[gi] ?? s.color, class: "bar", "data-series": s.name, "data-group": group,
      });
      plot.appendChild(title(bar, `${s.name} · ${group}: ${fmt(v)}`));
      if (barW >= 22) {
        plot.appendChild(el("text", { x: x + barW / 2, y: y - 4, "text-anchor": "middle", class: "bar-value" }, fmt(v)));
      }
    });
  });
  f.svg.appendChild(plot);
  if (series.length > 1 || opts.legend) legend(f, series);
  return f.svg;
}

function logTicks(lo, hi) {
  const ticks = [];
  const e0 = Math.floor(Math.log10(lo));
  const e1 = Math.ceil(Math.log10(hi));
  const steps = e1 - e0 <= 2 ? [1, 2, 5] : [1];
  for (let e = e0; e <= e1; e++) {
    for (const m of steps) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push({ value: v, label: formatNumber(v) });
    }
  }
  return ticks;
}

/**
 * Scatter plot with a log-scale x axis (e.g. per-class accuracy vs. training images).
 * points: [{x, y, label, color}]; options: xLabel, yLabel, yDomain, vlines: [{x, label}], height.
 */
export function scatterLogX(container, points, opts = {}) {
  const f = frame(container, opts.height || 280, "scatter-chart");
  const pts = points.filter((p) => p.x > 0 && Number.isFinite(p.y));
  if (!pts.length) { emptyState(f, opts.empty || "no per-class results"); return f.svg; }
  const xs = pts.map((p) => p.x);
  let lo = Math.min(...xs) / 1.4;
  let hi = Math.max(...xs) * 1.4;
  for (const v of opts.vlines || []) { lo = Math.min(lo, v.x / 1.2); hi = Math.max(hi, v.x * 1.2); }
  const [ylo, yhi] = opts.yDomain || [0, 100];
  const lx = linear(Math.log10(lo), Math.log10(hi), f.x0, f.x1);
  const sx = (v) => lx(Math.log10(v));
  const sy = linear(ylo, yhi, f.y0, f.y1);
  axes(f, logTicks(lo, hi), niceTicks(ylo, yhi, 5), sx, sy, opts);
  const plot = el("g", { class: "plot" });
  for (const v of opts.vlines || []) {
    const x = sx(v.x);
    plot.appendChild(el("line", { x1: x, x2: x, y1: f.y0, y2: f.y1, class: "vline" }));
    if (v.label) plot.appendChild(el("text", { x: x + 4, y: f.y1 + 10, class: "vline-label" }, v.label));
  }
  // a visible label next to the dot under the pointer (the <title> tooltip comes late, if at all)
  const hoverLabel = el("text", { class: "point-label", visibility: "hidden" });
  for (const p of pts) {
    const text = `${p.label}: ${formatNumber(p.y)}% with ${p.x} training images`;
    const dot = el("circle", {
      cx: sx(p.x), cy: sy(p.y), r: pts.length > 200 ? 2.5 : 4.5, fill: p.color || PALETTE[0],
      class: "scatter-dot",
    });
    dot.addEventListener("mouseenter", () => {
      const right = sx(p.x) > (f.x0 + f.x1) / 2;
      hoverLabel.textContent = text;
      hoverLabel.setAttribute("x", String(sx(p.x) + (right ? -8 : 8)));
      hoverLabel.setAttribute("y", String(Math.max(f.y1 + 12, sy(p.y) - 8)));
      hoverLabel.setAttribute("text-anchor", right ? "end" : "start");
      hoverLabel.setAttribute("visibility", "visible");
    });
    dot.addEventListener("mouseleave", () => hoverLabel.setAttribute("visibility", "hidden"));
    plot.appendChild(title(dot, text));
  }
  plot.appendChild(hoverLabel);
  f.svg.appendChild(plot);
  if (opts.legend) legend(f, opts.legend);
  return f.svg;
}

/**
 * Reliability diagram: accuracy per confidence bin against the diagonal of perfect calibration.
 * bins: [{lo, hi, accuracy, confidence, count}] with accuracy/confidence in [0, 1].
 */
export function reliabilityChart(container, bins, opts = {}) {
  const f = frame(container, opts.height || 260, "reliability-chart");
  const used = bins.filter((b) => b.count > 0 && Number.isFinite(b.accuracy));
  if (!used.length) { emptyState(f, "no calibration bins"); return f.svg; }
  const sx = linear(0, 1, f.x0, f.x1);
  const sy = linear(0, 1, f.y0, f.y1);
  const pct = (v) => `${Math.round(v * 100)}`;
  axes(f, niceTicks(0, 1, 5), niceTicks(0, 1, 5), sx, sy,
    { xLabel: "confidence (%)", yLabel: "accuracy (%)", xFormat: pct, yFormat: pct });
  const plot = el("g", { class: "plot" });
  for (const b of used) {
    const x = sx(b.lo);
    const w = sx(b.hi) - x;
    const bar = el("rect", { x: x + 1, y: sy(b.accuracy), width: Math.max(1, w - 2), height: f.y0 - sy(b.accuracy), fill: PALETTE[0], class: "bar" });
    plot.appendChild(title(bar, `confidence ${pct(b.lo)}–${pct(b.hi)}%: accuracy ${pct(b.accuracy)}% (${b.count} images)`));
    if (Number.isFinite(b.confidence)) {
      const top = Math.min(sy(b.accuracy), sy(b.confidence));
      const gap = Math.abs(sy(b.accuracy) - sy(b.confidence));
      plot.appendChild(el("rect", { x: x + 1, y: top, width: Math.max(1, w - 2), height: gap, class: "gap" }));
    }
  }
  plot.appendChild(el("line", { x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(1), class: "diagonal" }));
  f.svg.appendChild(plot);
  legend(f, [{ name: "accuracy", color: PALETTE[0] }, { name: "gap to confidence", color: "#f87171" }]);
  return f.svg;
}

/**
 * Bars on a log-scale y axis, in the order given (e.g. images per class, largest first).
 * bars: [{label, value, color, group}]; options: yLabel, hlines: [{y, label}], legend, height.
 */
export function logBarChart(container, bars, opts = {}) {
  const f = frame(container, opts.height || 280, "log-bar-chart");
  const used = bars.filter((b) => Number.isFinite(b.value));
  if (!used.length) { emptyState(f, opts.empty || "no classes"); return f.svg; }
  const positive = used.map((b) => b.value).filter((v) => v > 0);
  let lo = positive.length ? Math.min(...positive) / 1.6 : 0.5;
  let hi = Math.max(1, ...positive) * 1.4;
  for (const line of opts.hlines || []) { lo = Math.min(lo, line.y / 1.3); hi = Math.max(hi, line.y * 1.3); }
  lo = Math.max(lo, 0.5);
  const ly = linear(Math.log10(lo), Math.log10(hi), f.y0, f.y1);
  const sy = (v) => ly(Math.log10(Math.max(v, lo)));
  const band = (f.x1 - f.x0) / used.length;
  const sx = (i) => f.x0 + band * (i + 0.5);
  const showLabels = band >= 34;
  const xTicks = showLabels ? used.map((b, i) => ({ value: i, label: b.label.length > 9 ? `${b.label.slice(0, 8)}…` : b.label })) : [];
  const yTicks = logTicks(lo, hi).map((t) => t.value);
  axes(f, xTicks, yTicks, sx, sy, { ...opts, yFormat: formatNumber });
  const plot = el("g", { class: "plot" });
  for (const line of opts.hlines || []) {
    const y = sy(line.y);
    plot.appendChild(el("line", { x1: f.x0, x2: f.x1, y1: y, y2: y, class: "vline" }));
    if (line.label) plot.appendChild(el("text", { x: f.x1 - 4, y: y - 4, "text-anchor": "end", class: "vline-label" }, line.label));
  }
  const barW = Math.max(1, Math.min(40, band * 0.8));
  used.forEach((b, i) => {
    const y = b.value > 0 ? sy(b.value) : f.y0;
    const bar = el("rect", {
      x: sx(i) - barW / 2, y, width: barW, height: Math.max(0, f.y0 - y), rx: barW > 6 ? 2 : 0,
      fill: b.color || PALETTE[0], class: "bar", "data-label": b.label, "data-value": b.value,
      "data-group": b.group || null,
    });
    plot.appendChild(title(bar, `${b.label}: ${b.value} images${b.group ? ` (${b.group})` : ""}`));
  });
  f.svg.appendChild(plot);
  if (opts.legend) legend(f, opts.legend);
  return f.svg;
}

/**
 * Confusion-matrix heatmap. matrix: C x C counts (rows = true class, columns = prediction);
 * order: the class ids to show, in order (e.g. by training images, most first); names: labels.
 * Each cell's colour is its share of the row (the true class's test images).
 */
export function heatmap(container, matrix, order, names, opts = {}) {
  const n = order.length;
  const left = opts.left || 110;
  const cell = Math.max(4, Math.min(28, Math.floor(((container.clientWidth || 560) - left - 20) / Math.max(n, 1))));
  const height = MARGIN.top + n * cell + 36;
  const f = frame(container, height, "heatmap-chart", left);
  if (!n) { emptyState(f, "no confusion matrix"); return f.svg; }
  const plot = el("g", { class: "plot" });
  const top = MARGIN.top;
  order.forEach((row, i) => {
    const counts = matrix[row] || [];
    const total = counts.reduce((a, b) => a + b, 0);
    if (cell >= 10) {
      plot.appendChild(el("text", { x: left - 6, y: top + i * cell + cell / 2 + 4, "text-anchor": "end", class: "tick-label" }, names[row]));
    }
    order.forEach((col, j) => {
      const count = counts[col] || 0;
      const share = total ? count / total : 0;
      const rect = el("rect", {
        x: left + j * cell, y: top + i * cell, width: cell, height: cell,
        fill: row === col ? `rgba(37, 99, 235, ${0.08 + 0.92 * share})` : `rgba(220, 38, 38, ${share ? 0.08 + 0.92 * share : 0})`,
        class: "cell", "data-row": row, "data-col": col, "data-count": count,
      });
      plot.appendChild(title(rect, `true ${names[row]} → predicted ${names[col]}: ${count} (${(100 * share).toFixed(1)}% of ${total})`));
    });
  });
  plot.appendChild(el("rect", { x: left, y: top, width: n * cell, height: n * cell, class: "heatmap-frame" }));
  plot.appendChild(el("text", { x: left + (n * cell) / 2, y: top + n * cell + 22, "text-anchor": "middle", class: "axis-label" }, opts.xLabel || "predicted class"));
  plot.appendChild(el("text", { x: 12, y: top - 10, class: "axis-label" }, opts.yLabel || "true class"));
  f.svg.appendChild(plot);
  return f.svg;
}

/**
 * Overlaid line chart of several runs that zooms: drag across the plot to show only that x
 * range (opts.onZoom([lo, hi]) is called; draw again with opts.xDomain), and a log-scale y axis
 * (opts.logY; values <= 0 are left out). series: [{name, color, points: [[x, y], ...]}];
 * options: xLabel, yLabel, height, xDomain [lo, hi], logY, onZoom.
 */
export function overlayChart(container, series, opts = {}) {
  const inX = (p) => !opts.xDomain || (p[0] >= opts.xDomain[0] && p[0] <= opts.xDomain[1]);
  const usable = (p) => Number.isFinite(p[1]) && (!opts.logY || p[1] > 0) && inX(p);
  const shown = series.map((s) => ({ ...s, points: s.points.filter(usable) }));
  const all = shown.flatMap((s) => s.points);
  const f = frame(container, opts.height || 260, "line-chart overlay-chart");
  f.svg.dataset.log = opts.logY ? "y" : "";
  if (!all.length) {
    emptyState(f, opts.empty || "no data for these runs");
    return f.svg;
  }
  let [xlo, xhi] = opts.xDomain || [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  if (xlo === xhi) { xlo -= 0.5; xhi += 0.5; }
  let ylo = Math.min(...all.map((p) => p[1]));
  let yhi = Math.max(...all.map((p) => p[1]));
  let yTicks;
  let sy;
  if (opts.logY) {
    if (ylo === yhi) { ylo /= 2; yhi *= 2; }
    yTicks = logTicks(ylo, yhi).map((t) => t.value);
    const l0 = Math.log10(ylo);
    const l1 = Math.log10(yhi);
    const scale = linear(l0, l1, f.y0, f.y1);
    sy = (v) => scale(Math.log10(v));
  } else {
    const pad = (yhi - ylo) * 0.08 || Math.abs(yhi) * 0.1 || 1;
    ylo -= pad; yhi += pad;
    yTicks = niceTicks(ylo, yhi, 5);
    ylo = Math.min(ylo, yTicks[0]); yhi = Math.max(yhi, yTicks.at(-1));
    sy = linear(ylo, yhi, f.y0, f.y1);
  }
  const sx = linear(xlo, xhi, f.x0, f.x1);
  const xTicks = niceTicks(xlo, xhi, Math.min(8, Math.max(2, Math.floor((f.x1 - f.x0) / 70))));
  axes(f, xTicks, yTicks, sx, sy, { ...opts, yFormat: opts.logY ? formatNumber : null });
  const plot = el("g", { class: "plot" });
  for (const s of shown) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join("");
    plot.appendChild(el("path", {
      d, class: "series-line", stroke: s.color, "data-series": s.name, "data-points": s.points.length,
    }));
    if (s.points.length <= 80) {
      for (const p of s.points) {
        const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: 2.6, fill: s.color, class: "dot" });
        plot.appendChild(title(dot, `${s.name}: ${formatNumber(p[1])} at ${opts.xLabel || "x"} ${formatNumber(p[0])}`));
      }
    }
  }
  f.svg.appendChild(plot);
  legend(f, shown.filter((s) => s.points.length));
  if (opts.onZoom) {
    const toX = (px) => xlo + ((px - f.x0) / (f.x1 - f.x0 || 1)) * (xhi - xlo);
    const band = el("rect", { class: "zoom-band", y: f.y1, height: f.y0 - f.y1, width: 0, visibility: "hidden" });
    let start = null;
    const local = (e) => {
      const box = f.svg.getBoundingClientRect();
      return Math.min(f.x1, Math.max(f.x0, (e.clientX - box.left) * (f.width / box.width)));
    };
    f.svg.addEventListener("mousedown", (e) => { start = local(e); band.setAttribute("visibility", "visible"); e.preventDefault(); });
    f.svg.addEventListener("mousemove", (e) => {
      if (start === null) return;
      const x = local(e);
      band.setAttribute("x", Math.min(start, x));
      band.setAttribute("width", Math.abs(x - start));
    });
    const end = (e) => {
      if (start === null) return;
      const x = local(e);
      const [a, b] = [Math.min(start, x), Math.max(start, x)];
      start = null;
      band.setAttribute("visibility", "hidden");
      if (b - a >= 4) opts.onZoom([toX(a), toX(b)]);
    };
    f.svg.addEventListener("mouseup", end);
    f.svg.addEventListener("mouseleave", end);
    f.svg.insertBefore(band, plot);
    f.svg.style.cursor = "crosshair";
  }
  return f.svg;
}
