// Result-page sections of a job: the confusion-matrix heatmap, the sortable per-class table and
// MGP's reconstruction grid. Kept apart from app.js; app.js places them on the job page.

import { artifactObjectUrl } from "./api.js";
import { formatNumber, heatmap } from "./charts.js";

/** Most classes drawn in the heatmap (the ones with the most training images). */
const HEATMAP_MAX_CLASSES = 100;

function node(tag, props = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    n.append(c instanceof Node ? c : String(c));
  }
  return n;
}

function section(title, ...children) {
  return node("section", { class: "card" }, node("h2", {}, title), ...children);
}

function className(result, id) {
  const entry = (result.per_class || [])[id];
  return entry?.name ?? `class ${id}`;
}

/** Class ids by training images, most first (ties: by id). */
export function byTrainingCount(result) {
  const counts = result.class_counts || (result.per_class || []).map((c) => c.train_count);
  return counts.map((n, i) => [n, i]).sort((a, b) => b[0] - a[0] || a[1] - b[1]).map(([, i]) => i);
}

/** The heatmap card, or null when the result has no confusion matrix. */
export function confusionCard(result) {
  const matrix = result.confusion_matrix;
  if (!Array.isArray(matrix) || !matrix.length) return null;
  const order = byTrainingCount(result).slice(0, HEATMAP_MAX_CLASSES);
  const box = node("div", { class: "chart-box", id: "chart-confusion" });
  const names = matrix.map((_, i) => className(result, i));
  const note = `Rows: true class, columns: prediction, both ordered by training images (most first, the tail at the bottom right); a cell's shade is its share of the row.${matrix.length > order.length ? ` The ${order.length} classes with the most training images of ${matrix.length}.` : ""}`;
  const card = section("Confusion matrix", box, node("p", { class: "chart-note" }, note));
  // drawn once in the page, since the chart measures its container
  requestAnimationFrame(() => heatmap(box, matrix, order, names));
  return card;
}

const COLUMNS = [
  { key: "class", label: "class", num: true },
  { key: "name", label: "name" },
  { key: "group", label: "group" },
  { key: "train_count", label: "training images", num: true, sortable: true },
  { key: "support", label: "test images", num: true },
  { key: "accuracy", label: "top-1 (%)", num: true, sortable: true },
];

/** The per-class table card: sortable by training images and by accuracy (click a header). */
export function perClassCard(result) {
  const rows = (result.per_class || []).slice();
  if (!rows.length) return null;
  const state = { key: "train_count", dir: -1 };
  const tbody = node("tbody");
  const heads = COLUMNS.map((c) => node("th", {
    class: `${c.num ? "num" : ""}${c.sortable ? " sortable" : ""}`.trim() || null,
    "data-key": c.key,
    onclick: c.sortable ? () => sortBy(c.key) : null,
  }, c.label));
  function value(row, key) {
    const v = row[key];
    return v === null || v === undefined ? -Infinity : v;
  }
  function render() {
    rows.sort((a, b) => state.dir * (value(a, state.key) - value(b, state.key)) || a.class - b.class);
    heads.forEach((th, i) => {
      if (COLUMNS[i].sortable) th.setAttribute("aria-sort", COLUMNS[i].key === state.key ? (state.dir < 0 ? "descending" : "ascending") : "none");
    });
    tbody.replaceChildren(...rows.map((r) => node("tr", { "data-class": r.class },
      node("td", { class: "num" }, r.class),
      node("td", {}, r.name ?? "–"),
      node("td", {}, r.group ?? "–"),
      node("td", { class: "num" }, r.train_count ?? "–"),
      node("td", { class: "num" }, r.support ?? "–"),
      node("td", { class: "num" }, Number.isFinite(r.accuracy) ? formatNumber(r.accuracy) : "–"))));
  }
  function sortBy(key) {
    state.dir = state.key === key ? -state.dir : -1;
    state.key = key;
    render();
  }
  render();
  const table = node("table", { class: "per-class-table", id: "per-class-table" },
    node("thead", {}, node("tr", {}, heads)), tbody);
  return section("Per-class accuracy", node("div", { class: "table-wrap per-class-wrap" }, table),
    node("p", { class: "chart-note" }, "Click “training images” or “top-1” to sort; again to reverse."));
}

/** Cards below the result tiles of a finetune / evaluate job (nulls left out). */
export function resultExtras(result) {
  return [confusionCard(result), perClassCard(result)].filter(Boolean);
}

/** MGP's reconstruction grid of a pretrain job, refreshed when the artifact changes. */
export function reconstructionView() {
  const img = node("img", { alt: "MGP reconstructions: input, masked input and reconstruction of fixed validation images", id: "reconstruction-img" });
  const status = node("p", { class: "chart-note" }, "The grid appears after the first epochs.");
  const card = node("section", { class: "card reconstruction", id: "reconstruction", hidden: true },
    node("h2", {}, "What MGP learned: reconstructions"),
    img,
    node("p", { class: "chart-note" }, "Rows: fixed validation images · the same with the masked patches greyed out (the config's mask_ratio) · the decoder's reconstruction with the visible patches pasted back."),
    status);
  let shown = null;
  let objectUrl = null;
  async function update(artifacts) {
    const grid = (artifacts || []).find((a) => a.name === "reconstruction.png");
    if (!grid) return;
    const key = `${grid.size_bytes}:${grid.created_at}`;
    if (key === shown) return;
    shown = key;
    try {
      const url = await artifactObjectUrl(grid.url, "image/png");
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = url;
      img.src = url;
      status.textContent = `reconstruction.png · ${new Date(grid.created_at).toLocaleString()}`;
      card.hidden = false;
    } catch (err) {
      status.textContent = `reconstruction unavailable: ${err.message}`;
      card.hidden = false;
    }
  }
  return { card, update };
}
