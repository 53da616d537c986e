// Sweep pages (#/sweeps, #/sweeps/<id>): the mean ± std table over seeds, a heatmap for
// two-dimensional grids with the status of every cell, and the post-hoc τ trade-off curve of an
// evaluate job. The page helpers (h, card, badge, ...) come from app.js through sweepPages().

import { api } from "./api.js";
import { GROUP_COLORS, formatNumber, lineChart } from "./charts.js";

const METRICS = [["overall", "Overall"], ["many", "Many"], ["medium", "Medium"], ["few", "Few"], ["top5", "Top-5"], ["ece", "ECE"]];
const HEAT_METRICS = ["overall", "few", "medium", "many"];
// Grid fields that change the data: rows then do not compare, so no "best" is marked.
const DATA_KEYS = ["dataset", "preset", "data"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

const sweepHref = (id) => `#/sweeps/${encodeURIComponent(id)}`;

function paramText(v) {
  return typeof v === "string" ? v : JSON.stringify(v);
}

function meanStd(stat) {
  if (!stat || stat.mean === null || stat.mean === undefined) return "–";
  return stat.std === null || stat.std === undefined
    ? stat.mean.toFixed(2) : `${stat.mean.toFixed(2)} ± ${stat.std.toFixed(2)}`;
}

/** Row index of the best mean of each metric (lowest ECE), none when the grid varies the data. */
function bestRows(table, grid) {
  if (Object.keys(grid).some((k) => DATA_KEYS.includes(k.split(".")[0]))) return {};
  const best = {};
  for (const [m] of METRICS) {
    const scored = table.map((r, i) => [i, r[m]?.mean]).filter(([, v]) => Number.isFinite(v));
    if (scored.length < 2) continue;
    scored.sort((a, b) => (m === "ece" ? a[1] - b[1] : b[1] - a[1]));
    best[m] = scored[0][0];
  }
  return best;
}

function statusText(counts) {
  return Object.entries(counts || {}).map(([s, n]) => `${n} ${s}`).join(", ") || "–";
}

/** The dominant status of a cell: failed > running/queued > cancelled > succeeded. */
function cellStatus(counts) {
  const has = (s) => (counts?.[s] || 0) > 0;
  if (has("failed")) return "failed";
  if (has("running") || has("cancelling")) return "running";
  if (has("queued")) return "queued";
  if (has("cancelled")) return "cancelled";
  return has("succeeded") ? "succeeded" : "none";
}

/** Draws the many-vs-few curve of result.posthoc into `container`, best overall marked. */
export function drawPosthoc(container, result) {
  const curve = (result.posthoc || []).filter((p) => Number.isFinite(p.few) && Number.isFinite(p.many));
  const best = curve.find((p) => p.tau === result.posthoc_best_tau);
  const series = [{ name: "τ from 0 up", color: GROUP_COLORS.few, points: curve.map((p) => [p.few, p.many]) }];
  if (best) series.push({ name: `best overall: τ = ${formatNumber(best.tau)} (${best.overall.toFixed(1)}%)`, color: "#111827", points: [[best.few, best.many]] });
  lineChart(container, series, { xLabel: "few-shot accuracy (%)", yLabel: "many-shot accuracy (%)", height: 260, empty: "no post-hoc points" });
  const svg = container.querySelector("svg");
  if (svg && best) svg.dataset.bestTau = String(best.tau);
}

export function sweepPages({ h, card, badge, toast, Poller, setLive, jobHref, app }) {
  /** Appends the post-hoc trade-off card of an evaluate result to `box` (nothing without it). */
  function appendPosthoc(box, result) {
    if (!Array.isArray(result?.posthoc) || !result.posthoc.length) return;
    const chart = h("div", { class: "chart-box", id: "chart-posthoc" });
    const cal = result.calibration;
    const rows = result.posthoc.map((p) => h("tr", { class: p.tau === result.posthoc_best_tau ? "best" : null },
      h("td", { class: "num" }, formatNumber(p.tau)),
      ...["overall", "many", "medium", "few"].map((k) => h("td", { class: "num" }, Number.isFinite(p[k]) ? p[k].toFixed(1) : "–"))));
    box.append(h("div", { class: "grid-2 section" },
      card("Post-hoc logit adjustment: many vs. few", chart,
        h("p", { class: "chart-note" }, "z − τ·log π with the training prior π, one point per τ from the same logits; the dark point has the best overall accuracy.")),
      card("Post-hoc τ", h("div", { class: "table-wrap" }, h("table", { id: "posthoc-table" },
        h("thead", {}, h("tr", {}, ["τ", "Overall", "Many", "Medium", "Few"].map((t) => h("th", { class: t === "τ" ? "num greek" : "num" }, t)))),
        h("tbody", {}, rows))),
      cal ? h("p", { class: "chart-note", id: "posthoc-calibration" },
        `ECE ${cal.ece.toFixed(2)}% → ${cal.ece_scaled.toFixed(2)}% after temperature scaling (T = ${cal.temperature.toFixed(3)}, fitted on the ${cal.fit_split} split)`) : null)));
    drawPosthoc(chart, result);
  }

  function listView() {
    const tbody = h("tbody");
    app.replaceChildren(
      h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Sweeps"),
        h("p", { class: "muted small" }, "Grids of jobs over seeds, submitted with POST /sweeps or `livt sweep SPEC.yaml`."))),
      card(null, h("div", { class: "table-wrap" }, h("table", { id: "sweeps-table" },
        h("thead", {}, h("tr", {}, ["Sweep", "Status", "Grid", "Seeds", "Jobs", "Created"].map((t) => h("th", {}, t)))),
        tbody))));
    const poller = new Poller(async () => {
      const data = await api.sweeps();
      if (!data.items.length) {
        tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No sweeps yet.")));
        return false;
      }
      tbody.replaceChildren(...data.items.map((s) => h("tr", { data: { sweepId: s.id } },
        h("td", {}, h("a", { href: sweepHref(s.id) }, s.name || s.id)), h("td", {}, badge(s.status)),
        h("td", {}, Object.entries(s.grid).map(([k, v]) => `${k} (${v.length})`).join(" × ") || "–"),
        h("td", { class: "num" }, s.seeds.length), h("td", { class: "num" }, s.num_jobs),
        h("td", { class: "small muted" }, new Date(s.created_at).toLocaleString()))));
      return data.items.some((s) => s.status === "running");
    });
    return { dispose: () => poller.stop() };
  }

  function detailView(id) {
    const head = h("div", { class: "page-head" });
    const tableBox = h("div");
    const heatBox = h("div");
    const exportBox = h("div");
    app.replaceChildren(head, tableBox, heatBox, exportBox);
    let heatMetric = "overall";
    let last = null;

    function renderHead(s) {
      const cancel = s.status === "running" ? h("button", {
        class: "btn btn-danger", type: "button", id: "sweep-cancel",
        onclick: async () => {
          try { render(await api.cancelSweep(s.id)); toast("cancel requested"); } catch (err) { toast(err.message, "error"); }
        },
      }, "Cancel sweep") : null;
      const done = s.jobs.filter((j) => TERMINAL.has(j.status)).length;
      const best = s.best ? h("p", { class: "small", id: "sweep-best" }, `best trial: ${Object.entries(s.best.params).map(([k, v]) => `${k}=${formatNumber(v)}`).join(", ")} · objective ${s.best.objective.toFixed(2)} · `,
        h("a", { href: jobHref(s.best.job) }, s.best.job)) : null;
      head.replaceChildren(
        h("div", {}, h("h1", {}, `${s.name || s.id} `, badge(s.status)),
          h("p", { class: "muted small" }, `${s.id} · ${done}/${s.jobs.length} jobs finished · seeds ${s.seeds.join(", ")}${s.search ? ` · adaptive search, ${s.search.trials} trials` : ""}`), best),
        h("div", { class: "actions" }, cancel));
    }

    function renderTable(s) {
      const keys = s.search ? Object.keys(s.search.space) : Object.keys(s.grid);
      const best = bestRows(s.table, s.grid);
      const rows = s.table.map((r, i) => {
        const ids = r.cells.filter((c) => c.status === "succeeded").map((c) => c.job);
        return h("tr", { data: { row: i, status: cellStatus(r.status) } },
          ...keys.map((k) => h("td", { class: "mono" }, s.search ? formatNumber(r.params[k]) : paramText(r.params[k]))),
          h("td", { class: "num" }, r.n),
          h("td", { class: "small" }, statusText(r.status),
            ...r.cells.filter((c) => c.status === "failed").map((c) => h("div", { class: "field-error small" },
              h("a", { href: jobHref(c.job) }, `seed ${c.seed}`), `: ${c.failure_message || "failed"}`))),
          ...METRICS.map(([m]) => h("td", { class: "num" }, best[m] === i ? h("strong", {}, meanStd(r[m])) : meanStd(r[m]))),
          h("td", {}, ids.length ? h("a", { href: `#/compare?ids=${ids.join(",")}` }, "compare") : "–"));
      });
      tableBox.replaceChildren(card("Mean ± std over seeds (%)", h("div", { class: "table-wrap" }, h("table", { id: "sweep-table" },
        h("thead", {}, h("tr", {}, ...keys.map((k) => h("th", {}, k)), h("th", { class: "num" }, "n"), h("th", {}, "Jobs"),
          ...METRICS.map(([, t]) => h("th", { class: "num" }, t)), h("th", {}, ""))),
        h("tbody", {}, rows))),
      h("p", { class: "chart-note" }, "n: seeds finished with a result; std is the sample standard deviation. Best mean per column in bold (lowest for ECE), unless the grid varies the data.")));
    }

    function renderHeatmap(s) {
      const keys = Object.keys(s.grid);
      if (keys.length !== 2) { heatBox.replaceChildren(); return; }
      const [rk, ck] = keys;
      const cell = new Map(s.table.map((r) => [`${JSON.stringify(r.params[rk])}|${JSON.stringify(r.params[ck])}`, r]));
      const values = s.table.map((r) => r[heatMetric]?.mean).filter(Number.isFinite);
      const lo = Math.min(...values);
      const hi = Math.max(...values);
      const shade = (v) => {
        if (!Number.isFinite(v)) return "";
        const t = hi > lo ? (v - lo) / (hi - lo) : 1;
        return `background: hsl(215 80% ${Math.round(92 - t * 42)}%); color: ${t > 0.6 ? "#fff" : "#111827"}`;
      };
      const select = h("select", { id: "heatmap-metric", onchange: (e) => { heatMetric = e.target.value; renderHeatmap(s); } },
        HEAT_METRICS.map((m) => h("option", { value: m, selected: m === heatMetric }, m)));
      const body = s.grid[rk].map((rv) => h("tr", {}, h("th", { class: "mono" }, paramText(rv)),
        s.grid[ck].map((cv) => {
          const r = cell.get(`${JSON.stringify(rv)}|${JSON.stringify(cv)}`);
          const stat = r?.[heatMetric];
          return h("td", { class: "heat-cell", style: shade(stat?.mean), data: { status: cellStatus(r?.status), value: stat?.mean ?? "" }, title: statusText(r?.status) },
            h("div", { class: "heat-value" }, meanStd(stat)),
            h("div", { class: "heat-status small" }, cellStatus(r?.status)));
        })));
      heatBox.replaceChildren(card(`Heatmap: ${rk} × ${ck}`,
        h("label", { class: "small muted" }, "metric ", select),
        h("div", { class: "table-wrap" }, h("table", { id: "sweep-heatmap", class: "heatmap" },
          h("thead", {}, h("tr", {}, h("th", {}, `${rk} \\ ${ck}`), s.grid[ck].map((cv) => h("th", { class: "mono" }, paramText(cv))))),
          h("tbody", {}, body)))));
    }

    function renderExport(s) {
      const pre = h("pre", { id: "sweep-export", class: "mono small" });
      const show = async (format) => {
        try { pre.textContent = await api.sweepTable(s.id, format); } catch (err) { toast(err.message, "error"); }
      };
      exportBox.replaceChildren(card("Export",
        h("div", { class: "actions" }, ["md", "csv", "latex"].map((f) => h("button", {
          class: "btn btn-small", type: "button", data: { format: f }, onclick: () => show(f),
        }, f === "md" ? "Markdown" : f.toUpperCase()))), pre));
    }

    function render(s) {
      const first = last === null;
      last = s;
      renderHead(s);
      renderTable(s);
      renderHeatmap(s);
      if (first) renderExport(s);
    }

    setLive(true);
    const poller = new Poller(async () => {
      const s = await api.sweep(id);
      render(s);
      const again = s.status === "running";
      if (!again) setLive(false);
      return again;
    });
    return { dispose: () => { poller.stop(); setLive(false); } };
  }

  return { appendPosthoc, listView, detailView };
}
