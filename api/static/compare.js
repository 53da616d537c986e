// The parts of the compare view (#/compare?ids=a,b,...) that answer "which won": overlaid
// training curves of the runs (zoom by dragging, log-y), the config keys that differ between
// them, per-class accuracy side by side ordered by training images, and the warning shown when
// the runs were measured on different datasets or splits (then nothing is marked best).

import { overlayChart } from "./charts.js";

/** Curves the compare view can overlay: [key, label, metric names tried in turn, y label]. */
export const CURVES = [
  ["val_overall", "val overall", ["val_overall", "val_top1", "val_acc1"], "top-1 (%)"],
  ["val_few", "val few", ["val_few"], "few top-1 (%)"],
  ["train_loss", "train loss", ["train_loss", "loss"], "loss"],
];

/** Why the runs' numbers do not compare (different datasets or splits), or null. */
export function mismatch(jobs) {
  const datasets = new Set(jobs.map((j) => j.dataset || j.preset || "?"));
  const splits = new Set(jobs.map((j) => j.result?.split || "?"));
  const reasons = [];
  if (datasets.size > 1) reasons.push(`different datasets (${[...datasets].join(", ")})`);
  if (splits.size > 1) reasons.push(`different splits (${[...splits].join(", ")})`);
  return reasons.length ? `These runs are measured on ${reasons.join(" and ")}: their accuracies do not compare, so none is marked best.` : null;
}

function flatten(value, prefix, out) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out[prefix] = JSON.stringify(value);
  }
  return out;
}

/** [[key, [value per job (JSON text, or undefined)]]] of the config keys whose values differ,
 * leaving out those where every run names its own id (its artifact paths). */
export function configDiff(jobs) {
  const flat = jobs.map((j) => flatten(j.config || {}, "", {}));
  const keys = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  const rows = [];
  for (const key of keys) {
    const values = flat.map((f) => f[key]);
    if (values.every((v) => v === values[0])) continue;
    if (values.every((v, i) => v !== undefined && v.includes(jobs[i].id))) continue;
    rows.push([key, values]);
  }
  return rows;
}

function metricPoints(items, names) {
  for (const name of names) {
    const pts = items.filter((it) => it.metrics && Number.isFinite(it.metrics[name]))
      .map((it) => [it.epoch + 1, it.metrics[name]]);
    if (pts.length) return pts;
  }
  return [];
}

export function compareDetails({ h, card, api, palette, jobHref, jobLabel, fmtPct }) {
  const cache = new Map();
  const view = { curve: "val_overall", logY: false, zoom: null };
  let generation = 0;

  async function details(job) {
    if (!cache.has(job.id)) {
      cache.set(job.id, Promise.all([api.job(job.id), api.metrics(job.id)])
        .then(([full, metrics]) => ({ job: full, metrics: metrics.items || [] }))
        .catch((err) => { cache.delete(job.id); throw err; }));
    }
    return cache.get(job.id);
  }

  function curvesCard(runs) {
    const box = h("div", { class: "chart-box", id: "chart-overlay" });
    const reset = h("button", { class: "btn btn-small", type: "button", id: "zoom-reset", hidden: !view.zoom }, "Reset zoom");
    const select = h("select", { id: "overlay-metric" },
      CURVES.map(([key, label]) => h("option", { value: key, selected: key === view.curve }, label)));
    const log = h("input", { type: "checkbox", id: "overlay-log", checked: view.logY });
    const note = h("p", { class: "chart-note" }, "Drag across the chart to zoom into epochs.");
    function draw() {
      const [, label, names, yLabel] = CURVES.find((c) => c[0] === view.curve);
      const series = runs.map((r, i) => ({
        name: jobLabel(r.job), color: palette[i % palette.length], points: metricPoints(r.metrics, names),
      }));
      overlayChart(box, series, {
        xLabel: "epoch", yLabel, logY: view.logY, xDomain: view.zoom, height: 280,
        empty: `no ${label} recorded for these runs`,
        onZoom: (domain) => { view.zoom = domain; reset.hidden = false; draw(); },
      });
      box.dataset.curve = view.curve;
    }
    select.addEventListener("change", () => { view.curve = select.value; draw(); });
    log.addEventListener("change", () => { view.logY = log.checked; draw(); });
    reset.addEventListener("click", () => { view.zoom = null; reset.hidden = true; draw(); });
    const section = card("Curves",
      h("div", { class: "compare-controls" },
        h("label", { for: "overlay-metric" }, "Metric "), select,
        h("label", {}, log, " log y"), reset),
      box, note);
    requestAnimationFrame(draw);
    return section;
  }

  function diffCard(runs) {
    const rows = configDiff(runs.map((r) => r.job));
    const head = h("tr", {}, h("th", {}, "Config key"), runs.map((r, i) => h("th", {},
      h("span", { class: "swatch", style: `background:${palette[i % palette.length]}` }), jobLabel(r.job))));
    const body = rows.length
      ? rows.map(([key, values]) => h("tr", { data: { key } }, h("td", {}, key),
        values.map((v) => h("td", {}, v === undefined ? "(not set)" : v))))
      : [h("tr", {}, h("td", { colspan: runs.length + 1, class: "empty" }, "The runs' configs are the same."))];
    return card("Config differences",
      h("div", { class: "table-wrap" }, h("table", { id: "config-diff", class: "config-diff" }, h("thead", {}, head), h("tbody", {}, body))),
      h("p", { class: "chart-note" }, "Only the keys whose values differ between the runs; the runs' own artifact paths are left out."));
  }

  function perClassCard(runs) {
    const withClasses = runs.filter((r) => (r.job.result?.per_class || []).length);
    if (!withClasses.length) return null;
    const byRun = runs.map((r) => new Map((r.job.result?.per_class || []).map((c) => [c.class, c])));
    const reference = withClasses[0].job.result.per_class;
    const classes = [...reference].sort((a, b) => (b.train_count ?? 0) - (a.train_count ?? 0) || a.class - b.class);
    const head = h("tr", {}, h("th", {}, "Class"), h("th", { class: "num" }, "Training images"), h("th", {}, "Group"),
      runs.map((r, i) => h("th", { class: "num" },
        h("span", { class: "swatch", style: `background:${palette[i % palette.length]}` }), jobLabel(r.job))));
    const body = classes.map((c) => h("tr", { data: { class: c.class } },
      h("td", {}, c.name ?? `class ${c.class}`), h("td", { class: "num" }, c.train_count ?? "–"), h("td", {}, c.group || "–"),
      byRun.map((m) => h("td", { class: "num" }, fmtPct(m.get(c.class)?.accuracy)))));
    return card("Per-class accuracy (%)",
      h("div", { class: "table-wrap" }, h("table", { id: "compare-per-class" }, h("thead", {}, head), h("tbody", {}, body))),
      h("p", { class: "chart-note" }, `Classes ordered by training images of ${jobLabel(withClasses[0].job)}, most first.`));
  }

  /** Fills ``container`` with the curves, config diff and per-class table of ``jobs``. */
  async function render(container, jobs) {
    const mine = ++generation;
    if (jobs.length < 2) { container.replaceChildren(); return; }
    container.replaceChildren(h("p", { class: "muted small" }, "Loading curves and configs…"));
    const runs = await Promise.all(jobs.map(details));
    if (mine !== generation) return;
    view.zoom = null;
    container.replaceChildren(curvesCard(runs), diffCard(runs), perClassCard(runs) || "");
  }

  return { render };
}
