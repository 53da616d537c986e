// The LiVT jobs dashboard: sign-in, job list, job page, submit form and compare view.
// Plain ES modules, no build step; hash routes: #/jobs, #/jobs/<id>, #/submit, #/compare?ids=a,b,
// #/datasets, #/datasets/<name>
// #/sweeps, #/sweeps/<id> (sweeps.js)

import {
  api, ApiError, adoptTokenFromUrl, checkToken, downloadArtifact, getToken, handleUnauthorized, setToken,
} from "./api.js";
import {
  GROUP_COLORS, PALETTE, barChart, formatNumber, lineChart, logBarChart, reliabilityChart, scatterLogX,
} from "./charts.js";
import { compareDetails, mismatch } from "./compare.js";
import { reconstructionView, resultExtras } from "./results.js";
import { sweepPages } from "./sweeps.js";

const POLL_MS = 2000;
const PAGE_SIZE = 25;
const STATUSES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
const KINDS = ["pretrain", "finetune", "evaluate"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const GROUPS = ["many", "medium", "few", "overall"];
// Shot groups by training images per class: many > 100, medium 20–100, few < 20.
const MANY_ABOVE = 100;
const FEW_BELOW = 20;

// ------------------------------------------------------------------------------------------
// small helpers

function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "data") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "value" || k === "checked" || k === "selected") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const jobHref = (id) => `#/jobs/${encodeURIComponent(id)}`;

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
}

/** A compact time for tables: "21:51:38" today, "Nov 27 21:51" before. */
function fmtTimeShort(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const time = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (d.toDateString() === new Date().toDateString()) {
    return d.toLocaleTimeString(undefined, { ...time, second: "2-digit" });
  }
  return d.toLocaleString(undefined, { month: "short", day: "numeric", ...time });
}

function jobCell(job) {
  return h("td", { class: "job-cell" },
    h("a", { href: jobHref(job.id), class: "job-name" }, jobLabel(job)),
    job.name ? h("div", { class: "job-id mono" }, job.id) : null);
}

function timeCell(iso) {
  return h("td", { class: "nowrap", title: iso ? new Date(iso).toString() : null }, fmtTimeShort(iso));
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  const hours = Math.floor(s / 3600);
  const mins = Math.floor((s % 3600) / 60);
  if (hours) return `${hours}h ${String(mins).padStart(2, "0")}m`;
  return mins ? `${mins}m ${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function fmtPct(v) {
  return v === null || v === undefined || !Number.isFinite(v) ? "–" : v.toFixed(1);
}

function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return i ? `${v.toFixed(1)} ${units[i]}` : `${v} B`;
}

function badge(status) {
  return h("span", { class: `badge badge-${status}`, data: { status } }, status);
}

function jobLabel(job) {
  return job.name || job.id;
}

/** Share of the run done in [0, 1] (epoch and step are 0-based), or null when unknown. */
function fraction(job) {
  if (job.status === "succeeded") return 1;
  const p = job.progress;
  if (!p || !p.epochs) return null;
  const within = p.steps && p.step !== null && p.step !== undefined ? (p.step + 1) / p.steps : 0;
  return Math.min(1, ((p.epoch || 0) + Math.min(1, within)) / p.epochs);
}

function progressView(job) {
  const frac = fraction(job);
  const p = job.progress;
  let text = "";
  if (job.status === "queued") {
    text = job.attempt > 1 ? `queued (attempt ${job.attempt})` : "waiting";
    if (job.pending_reason) text += `: ${job.pending_reason}`;
  }
  else if (p && p.epochs) {
    text = `${Math.min((p.epoch || 0) + 1, p.epochs)}/${p.epochs}`;
    if (job.status === "running" && Number.isFinite(p.eta_seconds)) text += ` · ETA ${fmtDuration(p.eta_seconds)}`;
  } else if (job.status === "running") text = "starting";
  if (frac === null && TERMINAL.has(job.status)) {
    return h("div", { class: "progress", data: { fraction: "" } }, h("span", { class: "progress-text" }, "–"));
  }
  const fill = h("div", {
    class: `progress-fill${job.status === "succeeded" ? " done" : ""}`,
    style: `width: ${((frac || 0) * 100).toFixed(1)}%`,
  });
  return h("div", { class: "progress", data: { fraction: frac === null ? "" : frac.toFixed(4) } },
    h("div", { class: "progress-track" }, fill),
    h("span", { class: "progress-text" }, text));
}

function toast(message, kind = "info") {
  const node = h("div", { class: `toast ${kind}`, role: "status" }, message);
  document.body.append(node);
  setTimeout(() => node.remove(), 4000);
}

/** Runs `fn` now and then every `ms` after each run finishes, until stopped. */
class Poller {
  constructor(fn, ms = POLL_MS) {
    this.fn = fn;
    this.ms = ms;
    this.stopped = false;
    this.timer = null;
    this.tick();
  }

  async tick() {
    if (this.stopped) return;
    try {
      const again = await this.fn();
      if (again === false) { this.stop(); return; }
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) console.warn("refresh failed", err);
    }
    if (!this.stopped) this.timer = setTimeout(() => this.tick(), this.ms);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
  }
}

function card(title, ...children) {
  return h("section", { class: "card" }, title ? h("h2", {}, title) : null, ...children);
}

function setLive(on) {
  document.getElementById("live").hidden = !on;
}

// ------------------------------------------------------------------------------------------
// router

const app = document.getElementById("app");
let currentView = null;
const sweeps = sweepPages({ h, card, badge, toast, Poller, setLive, jobHref, app });

function route() {
  if (currentView) currentView.dispose();
  currentView = null;
  setLive(false);
  const signedIn = Boolean(getToken());
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  if (!signedIn) { renderSignIn(); return; }
  const [path, qs] = (window.location.hash || "#/jobs").slice(1).split("?");
  const params = new URLSearchParams(qs || "");
  const parts = path.split("/").filter(Boolean);
  let section = parts[0] || "jobs";
  if (section === "jobs" && parts[1]) currentView = jobView(decodeURIComponent(parts[1]));
  else if (section === "submit") currentView = submitView(params);
  else if (section === "compare") currentView = compareView(params);
  else if (section === "datasets" && parts[1]) currentView = datasetView(decodeURIComponent(parts[1]));
  else if (section === "datasets") currentView = datasetsView();
  else if (section === "sweeps") currentView = parts[1] ? sweeps.detailView(decodeURIComponent(parts[1])) : sweeps.listView();
  else { section = "jobs"; currentView = jobsView(); }
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
}

// ------------------------------------------------------------------------------------------
// sign-in

function renderSignIn(message) {
  const content = document.getElementById("sign-in-template").content.cloneNode(true);
  app.replaceChildren(content);
  const form = document.getElementById("sign-in-form");
  const error = document.getElementById("sign-in-error");
  if (message) { error.textContent = message; error.hidden = false; }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    try {
      if (await checkToken(token)) {
        setToken(token);
        route();
        return;
      }
      error.textContent = "This token is not valid on this server.";
    } catch (err) {
      error.textContent = `Cannot reach the server: ${err.message}`;
    }
    error.hidden = false;
  });
  document.getElementById("token-input").focus();
}

function signOut() {
  setToken(null);
  route();
}

// ------------------------------------------------------------------------------------------
// job list

const listState = { status: "", kind: "", tag: "", sort: "", cursors: [null] };
const SORTS = [["", "Newest first"], ["-overall", "Best overall"], ["-few", "Best few"], ["-many", "Best many"]];

function accuracyCell(job, group) {
  const value = job.result && job.kind !== "pretrain" ? job.result[group] : null;
  return h("td", { class: "num mono", data: { col: group } }, value === null || value === undefined ? "–" : value.toFixed(2));
}

function jobsView() {
  const tbody = h("tbody");
  const pageInfo = h("span", { class: "muted small" });
  const prev = h("button", { class: "btn btn-small", type: "button", id: "prev-page" }, "← Newer");
  const next = h("button", { class: "btn btn-small", type: "button", id: "next-page" }, "Older →");
  let nextCursor = null;

  const restart = () => { listState.cursors = [null]; poller.stop(); poller = new Poller(refresh); };
  const select = (name, values, label) => h("div", { class: "field" },
    h("label", { for: `filter-${name}` }, label),
    h("select", {
      id: `filter-${name}`, name,
      onchange: (e) => { listState[name] = e.target.value; restart(); },
    },
    h("option", { value: "" }, "all"),
    values.map((v) => h("option", { value: v, selected: listState[name] === v }, v))));
  const tagInput = h("input", {
    id: "filter-tag", name: "tag", type: "search", placeholder: "any", value: listState.tag,
    pattern: "[A-Za-z0-9][A-Za-z0-9._:\\-]{0,49}",
    onchange: (e) => {
      if (!e.target.checkValidity()) { toast("A tag is letters, digits, '.', '_', ':' or '-'.", "error"); return; }
      listState.tag = e.target.value.trim(); restart();
    },
  });
  const sortSelect = h("select", {
    id: "sort-jobs", name: "sort",
    onchange: (e) => { listState.sort = e.target.value; restart(); },
  }, SORTS.map(([v, label]) => h("option", { value: v, selected: listState.sort === v }, label)));

  const table = h("table", { class: "jobs-table" },
    h("thead", {}, h("tr", {},
      ["Job", "Kind", "Dataset", "Model", "Status", "Progress", "Try", "Overall", "Few", "Created", "Finished"]
        .map((t) => h("th", { class: ["Try", "Overall", "Few"].includes(t) ? "num" : null }, t)))),
    tbody);

  app.replaceChildren(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Jobs"), h("p", { class: "muted small" }, "Refreshes every 2 seconds; accuracies in percent on the reported split.")),
      h("div", { class: "actions" }, h("a", { class: "btn btn-primary", href: "#/submit" }, "New job"))),
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, select("status", STATUSES, "Status"), select("kind", KINDS, "Kind"),
        h("div", { class: "field" }, h("label", { for: "filter-tag" }, "Tag"), tagInput),
        h("div", { class: "field" }, h("label", { for: "sort-jobs" }, "Order"), sortSelect)),
      h("div", { class: "table-wrap" }, table),
      h("div", { class: "pager" }, pageInfo, prev, next)));

  async function refresh() {
    const page = listState.cursors.length - 1;
    const cursor = listState.cursors[page];
    const data = await api.jobs({
      status: listState.status, kind: listState.kind, tag: listState.tag, sort: listState.sort, limit: PAGE_SIZE, cursor,
    });
    nextCursor = data.next_cursor;
    renderRows(data.items);
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
    pageInfo.textContent = `page ${page + 1}`;
    setLive(true);
  }

  function renderRows(jobs) {
    if (!jobs.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 11, class: "empty" },
        listState.status || listState.kind || listState.tag ? "No jobs match these filters." : "No jobs yet — submit one.")));
      return;
    }
    tbody.replaceChildren(...jobs.map((job) => h("tr", {
      class: "clickable", data: { jobId: job.id, status: job.status },
      onclick: (e) => { if (e.target.tagName !== "A") window.location.hash = jobHref(job.id); },
    },
    jobCell(job),
    h("td", {}, h("span", { class: "badge badge-kind" }, job.kind)),
    h("td", { class: "nowrap" }, job.dataset || job.preset || "–"),
    h("td", { class: "mono nowrap" }, job.model || "–"),
    h("td", {}, badge(job.status)),
    h("td", {}, progressView(job)),
    h("td", { class: "num" }, job.attempt),
    accuracyCell(job, "overall"),
    accuracyCell(job, "few"),
    timeCell(job.created_at),
    timeCell(job.finished_at))));
  }

  prev.addEventListener("click", () => {
    if (listState.cursors.length > 1) listState.cursors.pop();
    poller.stop(); poller = new Poller(refresh);
  });
  next.addEventListener("click", () => {
    if (!nextCursor) return;
    listState.cursors.push(nextCursor);
    poller.stop(); poller = new Poller(refresh);
  });

  let poller = new Poller(refresh);
  return { dispose: () => poller.stop() };
}

// ------------------------------------------------------------------------------------------
// job page

function metricSeries(items, names) {
  for (const name of names) {
    const pts = items
      .filter((it) => it.metrics && Number.isFinite(it.metrics[name]))
      .map((it) => [it.epoch + 1, it.metrics[name]]);
    if (pts.length) return pts;
  }
  return [];
}

/** [{x: training images, y: accuracy %, label, color}] from a result's per_class entries
 * ({class, name, accuracy, train_count, support, group}); classes without test images are left out. */
function perClassPoints(result) {
  return (result.per_class || []).filter((c) => Number.isFinite(c.accuracy)).map((c) => ({
    x: c.train_count,
    y: c.accuracy,
    label: `${c.name ?? `class ${c.class}`} (${c.group}, ${c.support} test images)`,
    color: GROUP_COLORS[c.group] || PALETTE[0],
  }));
}

/** Reliability bins of a result ([{lo, hi, accuracy, confidence, count}], fractions in [0, 1]),
 * or null when the result carries none. */
function calibrationBins(result) {
  return Array.isArray(result.reliability) && result.reliability.length ? result.reliability : null;
}

function tile(label, value, cls = "") {
  return h("div", { class: "tile" }, h("div", { class: "label" }, label), h("div", { class: `value ${cls}` }, value));
}

/** Classes, training images and accuracy per shot group (many > 100 images, few < 20). */
function groupTable(r) {
  const rows = GROUPS.slice(0, 3).map((g) => {
    const members = (r.per_class || []).filter((c) => c.group === g);
    const counts = members.map((c) => c.train_count);
    const range = counts.length ? `${Math.min(...counts)}–${Math.max(...counts)}` : "–";
    return h("tr", {},
      h("td", { class: "nowrap" }, h("span", { class: "swatch", style: `background:${GROUP_COLORS[g]}` }), g),
      h("td", { class: "num" }, members.length),
      h("td", { class: "num" }, range),
      h("td", { class: "num" }, counts.reduce((a, b) => a + b, 0)),
      h("td", { class: "num" }, fmtPct(r[g])));
  });
  const all = r.class_counts || [];
  rows.push(h("tr", { class: "total" }, h("td", {}, "overall"), h("td", { class: "num" }, all.length),
    h("td", { class: "num" }, all.length ? `${Math.min(...all)}–${Math.max(...all)}` : "–"),
    h("td", { class: "num" }, all.reduce((a, b) => a + b, 0)), h("td", { class: "num" }, fmtPct(r.overall))));
  return h("div", {},
    h("table", { class: "group-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "group"), h("th", { class: "num" }, "classes"),
        h("th", { class: "num" }, "images per class"), h("th", { class: "num" }, "training images"),
        h("th", { class: "num" }, "top-1 (%)"))),
      h("tbody", {}, rows)),
    h("p", { class: "chart-note" }, `many: > ${MANY_ABOVE} training images per class · medium: ${FEW_BELOW}–${MANY_ABOVE} · few: < ${FEW_BELOW}; group accuracy is the mean over its classes.`));
}

function resultTiles(r) {
  return h("div", { class: "tiles" },
    tile("Overall top-1", fmtPct(r.overall)),
    tile("Many", fmtPct(r.many), "many"),
    tile("Medium", fmtPct(r.medium), "medium"),
    tile("Few", fmtPct(r.few), "few"),
    tile("Top-5", fmtPct(r.top5)),
    tile("ECE", fmtPct(r.ece)),
    tile("MCE", fmtPct(r.mce)),
    tile("PDC", r.pdc === null || r.pdc === undefined ? "–" : r.pdc.toFixed(3)));
}

function jobView(id) {
  const pollers = [];
  const state = { job: null, metrics: [], steps: [], live: [], logOffset: 0, logsDone: false, metricsAt: -1, artifactsAt: null };
  const head = h("div", { class: "page-head" });
  const progressBox = h("section", { class: "card", hidden: true });
  const failureBox = h("section", { class: "card failure", hidden: true });
  const metaBox = h("section", { class: "card" });
  const linksBox = h("section", { class: "card", hidden: true });
  const lossBox = h("div", { class: "chart-box", id: "chart-loss" });
  const lrBox = h("div", { class: "chart-box", id: "chart-lr" });
  const valBox = h("div", { class: "chart-box", id: "chart-val" });
  const valCard = card("Validation top-1 (%) per epoch", valBox);
  const resultBox = h("div", { id: "results" });
  const reconstruction = reconstructionView();
  const curvesGrid = h("div", { class: "grid-2 section", id: "training-curves" });
  const logs = h("pre", { class: "logs", id: "logs" });
  const artifactsList = h("ul", { class: "artifact-list" });
  const configBox = h("div");

  app.replaceChildren(
    h("p", { class: "small" }, h("a", { href: "#/jobs" }, "← All jobs")),
    head, failureBox, progressBox, metaBox, linksBox,
    curvesGrid,
    valCard,
    resultBox,
    reconstruction.card,
    h("div", { class: "grid-2 section" },
      card("Log", logs),
      card("Artifacts", artifactsList)),
    h("section", { class: "card" }, configBox));

  curvesGrid.append(card("Training loss", lossBox), card("Learning rate", lrBox));

  function renderHead(job) {
    const cancel = h("button", {
      class: "btn btn-danger", type: "button", id: "cancel-job",
      disabled: TERMINAL.has(job.status) || job.status === "cancelling",
      onclick: () => act(() => api.cancel(job.id), "Cancellation requested"),
    }, "Cancel");
    const retry = h("button", {
      class: "btn", type: "button", id: "retry-job",
      disabled: !(job.status === "failed" || job.status === "cancelled"),
      onclick: () => act(() => api.retry(job.id), "Queued again"),
    }, "Retry");
    const compare = hasAccuracy(job)
      ? h("a", { class: "btn", href: `#/compare?ids=${encodeURIComponent(job.id)}` }, "Compare…")
      : null;
    head.replaceChildren(
      h("div", {},
        h("h1", {}, jobLabel(job), " ", badge(job.status)),
        h("p", { class: "muted small mono" }, `${job.id} · ${job.kind}${job.owner ? ` · ${job.owner}` : ""}`)),
      h("div", { class: "actions" }, compare, retry, cancel));
  }

  async function act(call, message) {
    try {
      const job = await call();
      toast(message);
      update(job);
      if (!TERMINAL.has(job.status)) startPolling();
    } catch (err) {
      toast(err.message, "error");
    }
  }

  function renderMeta(job) {
    const rows = [
      ["Kind", job.kind], ["Preset", job.preset], ["Dataset", job.dataset], ["Model", job.model],
      ["Loss", job.loss], ["Attempt", job.attempt], ["Queue", job.queue && `${job.queue} · ${job.devices || `${job.gpus} GPU${job.gpus === 1 ? "" : "s"}`}`],
      ["Waiting", job.status === "queued" ? job.pending_reason : null],
      ["Created", fmtTime(job.created_at)], ["Started", fmtTime(job.started_at)],
      ["Finished", fmtTime(job.finished_at)],
    ];
    if (job.started_at && job.finished_at) {
      rows.push(["Run time", fmtDuration((new Date(job.finished_at) - new Date(job.started_at)) / 1000)]);
    }
    metaBox.replaceChildren(h("dl", { class: "meta" },
      rows.filter(([, v]) => v !== null && v !== undefined && v !== "")
        .map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, String(v))))));
  }

  function renderProgress(job) {
    const p = job.progress;
    const active = !TERMINAL.has(job.status);
    progressBox.hidden = !active;
    if (!active) return;
    const parts = [];
    if (p) {
      if (p.epochs) parts.push(`epoch ${Math.min((p.epoch || 0) + 1, p.epochs)} of ${p.epochs}`);
      if (p.steps) parts.push(`step ${(p.step || 0) + 1} of ${p.steps}`);
      if (Number.isFinite(p.loss)) parts.push(`loss ${formatNumber(p.loss)}`);
      if (Number.isFinite(p.lr)) parts.push(`lr ${formatNumber(p.lr)}`);
      if (Number.isFinite(p.images_per_sec)) parts.push(`${p.images_per_sec.toFixed(0)} img/s`);
      if (Number.isFinite(p.eta_seconds)) parts.push(`ETA ${fmtDuration(p.eta_seconds)}`);
    }
    progressBox.replaceChildren(h("h2", {}, "Progress"), progressView(job),
      h("p", { class: "muted small" }, parts.join(" · ") || (job.status === "queued" ? (job.pending_reason || "waiting for a worker") : "starting")));
  }

  function renderFailure(job) {
    failureBox.hidden = !job.failure;
    if (job.failure) {
      failureBox.replaceChildren(h("h2", {}, `Failed: ${job.failure.reason}`),
        h("p", { class: "mono" }, job.failure.message));
    }
  }

  async function renderLinks(job) {
    const links = [];
    if (job.init_job_id) links.push(h("span", {}, "initialised from ", h("a", { href: jobHref(job.init_job_id), class: "mono" }, job.init_job_id)));
    if (job.depends_on && job.depends_on !== job.init_job_id) links.push(h("span", {}, "waits for ", h("a", { href: jobHref(job.depends_on), class: "mono" }, job.depends_on)));
    if (job.sweep_id) links.push(h("span", {}, "part of sweep ", h("a", { href: `#/sweeps/${encodeURIComponent(job.sweep_id)}`, class: "mono", id: "job-sweep" }, job.sweep_id)));
    if (!job.pipeline_id && !links.length) { linksBox.hidden = true; return; }
    linksBox.hidden = false;
    const stages = h("div", { class: "stages" });
    linksBox.replaceChildren(h("h2", {}, job.pipeline_id ? `Pipeline ${job.pipeline_id}` : "Lineage"),
      stages, ...(links.length ? [h("p", { class: "small" }, ...links.flatMap((l, i) => (i ? [" · ", l] : [l])))] : []));
    if (!job.pipeline_id) return;
    try {
      const pipeline = await api.pipeline(job.pipeline_id);
      stages.replaceChildren(...pipeline.jobs.map((stage, i) => h("div", { class: "stage-step" },
        i ? h("span", { class: "stage-arrow" }, "→") : null,
        h("div", { class: `stage${stage.id === job.id ? " current" : ""}` },
          h("span", { class: "muted small" }, `${i + 1}. ${stage.kind}`),
          stage.id === job.id ? h("span", { class: "mono" }, stage.id) : h("a", { href: jobHref(stage.id), class: "mono" }, stage.id),
          badge(stage.status)))));
    } catch (err) {
      stages.replaceChildren(h("span", { class: "muted" }, `pipeline unavailable: ${err.message}`));
    }
  }

  function renderCurves(job) {
    // an evaluation trains nothing: no loss, lr or per-epoch cards
    curvesGrid.hidden = job.kind === "evaluate";
    if (job.kind === "evaluate") { valCard.hidden = true; return; }
    const items = state.metrics;
    // the stored step points (they survive a reload), then the live ones polled since
    const lastStored = state.steps.length ? state.steps.at(-1).x : -Infinity;
    const stepPoints = [...state.steps, ...state.live.filter((p) => p.x > lastStored)];
    const liveLoss = stepPoints.filter((p) => Number.isFinite(p.loss)).map((p) => [p.x, p.loss]);
    const liveLr = stepPoints.filter((p) => Number.isFinite(p.lr)).map((p) => [p.x, p.lr]);
    const epochLoss = metricSeries(items, ["train_loss", "loss"]);
    const epochLr = metricSeries(items, ["lr"]);
    const lossSeries = [{ name: "train loss (epoch mean)", color: PALETTE[0], points: epochLoss }];
    if (liveLoss.length) lossSeries.push({ name: "step loss", color: "#93c5fd", points: liveLoss });
    lineChart(lossBox, lossSeries, { xLabel: "epoch", yLabel: "loss", empty: "waiting for the first steps" });
    const lrSeries = [{ name: "lr (epoch end)", color: PALETTE[3], points: epochLr }];
    if (liveLr.length) lrSeries.push({ name: "lr (step)", color: "#5eead4", points: liveLr });
    lineChart(lrBox, lrSeries, { xLabel: "epoch", yLabel: "learning rate", empty: "waiting for the first steps" });
    if (job.kind === "pretrain") { valCard.hidden = true; return; }
    valCard.hidden = false;
    const val = [
      { name: "overall", color: GROUP_COLORS.overall, points: metricSeries(items, ["val_overall", "val_top1", "val_acc1"]) },
      { name: "many", color: GROUP_COLORS.many, points: metricSeries(items, ["val_many"]) },
      { name: "medium", color: GROUP_COLORS.medium, points: metricSeries(items, ["val_medium"]) },
      { name: "few", color: GROUP_COLORS.few, points: metricSeries(items, ["val_few"]) },
    ];
    lineChart(valBox, val, {
      xLabel: "epoch", yLabel: "top-1 (%)", yDomain: [0, 100], integerX: true,
      empty: job.kind === "evaluate" ? "an evaluation has no epochs" : "after the first epoch",
    });
  }

  function renderResult(job) {
    const r = job.result;
    if (!r) { resultBox.replaceChildren(); return; }
    if (job.kind === "pretrain") {
      resultBox.replaceChildren(card("Result", h("div", { class: "tiles" },
        tile("Final loss", formatNumber(r.final_loss)),
        tile("Lowest loss", formatNumber(r.min_loss)),
        tile("Epochs", r.epochs ?? "–"))));
      return;
    }
    const bars = h("div", { class: "chart-box", id: "chart-groups" });
    const scatter = h("div", { class: "chart-box", id: "chart-per-class" });
    const calib = h("div", { class: "chart-box", id: "chart-calibration" });
    const bins = calibrationBins(r);
    resultBox.replaceChildren(
      card(`Results${r.split ? ` on the ${r.split} split` : ""}`, resultTiles(r)),
      h("div", { class: "grid-2 section" },
        card("Accuracy by shot group (%)", bars),
        card("Per-class accuracy vs. training images", scatter,
          h("p", { class: "chart-note" }, "Each dot is a class; the x axis is logarithmic, the tail is on the left."))),
      h("div", { class: "grid-2 section" },
        card("Shot groups", groupTable(r)),
        card(bins ? "Calibration: reliability diagram" : "Calibration error (%)", calib,
          h("p", { class: "chart-note" }, `ECE and MCE over 15 confidence bins${Number.isFinite(r.pdc) ? ` · PDC ${r.pdc.toFixed(3)} (lower is better)` : ""}`))));
    // charts measure their container, so draw them once they are in the page
    barChart(bars, GROUPS, [{
      name: jobLabel(job), color: PALETTE[0], values: GROUPS.map((g) => r[g]), colors: GROUPS.map((g) => GROUP_COLORS[g]),
    }], { yMax: 100, yLabel: "top-1 (%)" });
    scatterLogX(scatter, perClassPoints(r), {
      xLabel: "training images of the class (log scale)", yLabel: "accuracy (%)",
      vlines: [{ x: FEW_BELOW, label: "few | medium" }, { x: MANY_ABOVE, label: "medium | many" }],
      legend: GROUPS.slice(0, 3).map((g) => ({ name: g, color: GROUP_COLORS[g] })),
    });
    resultBox.append(...resultExtras(r));
    sweeps.appendPosthoc(resultBox, r);
    if (bins) reliabilityChart(calib, bins);
    else {
      barChart(calib, ["ECE", "MCE"], [{ name: "calibration error", color: "#64748b", values: [r.ece, r.mce] }],
        { yLabel: "%", height: 200 });
    }
  }

  async function refreshArtifacts(job) {
    const data = await api.artifacts(job.id);
    if (job.kind === "pretrain") reconstruction.update(data.items);
    artifactsList.replaceChildren(...(data.items.length ? data.items.map((a) => h("li", {},
      h("button", {
        class: "btn btn-small", type: "button", data: { artifact: a.name },
        onclick: async () => {
          try { await downloadArtifact(a.url, a.name); } catch (err) { toast(err.message, "error"); }
        },
      }, "Download"),
      h("span", { class: "mono" }, a.name),
      h("span", { class: "muted small" }, a.kind),
      h("span", { class: "size" }, fmtBytes(a.size_bytes)))) : [h("li", { class: "muted" }, "none yet")]));
  }

  function renderConfig(job) {
    if (!job.config && !job.spec) return;
    configBox.replaceChildren(
      h("details", { class: "config", id: "config" },
        h("summary", {}, "Resolved config"),
        h("pre", {}, JSON.stringify(job.config ?? {}, null, 2))),
      job.spec ? h("details", { class: "config" },
        h("summary", {}, "Submitted spec"),
        h("pre", {}, JSON.stringify(job.spec, null, 2))) : null);
  }

  function appendLogs(lines) {
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 24;
    const frag = document.createDocumentFragment();
    for (const line of lines) {
      const ts = line.ts ? new Date(line.ts).toLocaleTimeString(undefined, { hourCycle: "h23" }) : "";
      frag.append(h("span", { class: `lvl-${line.level}` }, h("span", { class: "ts" }, `${ts} `), line.message, "\n"));
    }
    logs.append(frag);
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  }

  /** Stored step points → {x, loss, lr} with x in epochs (global_step counts the steps done). */
  function stepPoints(history, job) {
    const perEpoch = job.progress?.steps;
    if (!perEpoch) return [];
    return history.items
      .filter((it) => Number.isFinite(it.global_step))
      .map((it) => ({ x: it.global_step / perEpoch, loss: it.metrics.loss, lr: it.metrics.lr }));
  }

  function recordLive(job) {
    const p = job.progress;
    if (job.status !== "running" || !p || !p.steps || p.step === null || p.step === undefined) return;
    const x = (p.epoch || 0) + (p.step + 1) / p.steps;
    const last = state.live.at(-1);
    if (!last || x > last.x) state.live.push({ x, loss: p.loss, lr: p.lr });
  }

  function update(job) {
    const first = state.job === null;
    const changed = first || state.job.status !== job.status || state.job.attempt !== job.attempt;
    state.job = { ...job, config: job.config ?? state.job?.config, spec: job.spec ?? state.job?.spec };
    renderHead(job);
    renderProgress(job);
    renderFailure(job);
    renderMeta(job);
    if (first) { renderConfig(job); renderLinks(job); }
    if (changed) renderResult(job);
    recordLive(job);
  }

  async function refreshJob() {
    const job = await api.job(id);
    update(job);
    const epoch = job.progress?.epoch ?? -1;
    const finished = TERMINAL.has(job.status);
    if (epoch !== state.metricsAt || finished || !state.metrics.length) {
      const m = await api.metrics(id);
      state.metrics = m.items;
      state.metricsAt = epoch;
      if (job.kind !== "evaluate") state.steps = stepPoints(await api.stepMetrics(id), job);
    }
    renderCurves(job);
    const artifactKey = `${job.status}:${state.metrics.length}`;
    if (artifactKey !== state.artifactsAt) {
      state.artifactsAt = artifactKey;
      await refreshArtifacts(job);
    }
    setLive(!finished);
    return !finished;
  }

  async function refreshLogs() {
    for (;;) {
      const chunk = await api.logs(id, state.logOffset);
      appendLogs(chunk.lines);
      state.logOffset = chunk.next_offset;
      if (chunk.lines.length < 500) return !(chunk.finished && TERMINAL.has(state.job?.status));
    }
  }

  function startPolling() {
    for (const p of pollers) p.stop();
    pollers.length = 0;
    pollers.push(new Poller(refreshJob), new Poller(refreshLogs));
  }

  api.job(id).then(() => startPolling()).catch((err) => {
    app.replaceChildren(card("Job not found",
      h("p", {}, err instanceof ApiError && err.status === 404
        ? `There is no job ${id} that you can see.` : err.message),
      h("a", { href: "#/jobs" }, "← All jobs")));
  });
  return { dispose: () => pollers.forEach((p) => p.stop()) };
}

// ------------------------------------------------------------------------------------------
// submit form

/** The answer of GET /presets as {names, configs: {preset: {kind: config}}, base, models, losses}. */
function normalisePresets(data) {
  return {
    names: data.items.map((p) => p.name),
    configs: Object.fromEntries(data.items.map((p) => [p.name, p.configs])),
    base: data.defaults || {},
    models: data.models || {},
    losses: data.losses || [],
  };
}

function submitView(params) {
  const form = h("form", { id: "submit-form", novalidate: true });
  const errorBox = h("div", { class: "error-box", hidden: true, id: "submit-errors" });
  const fields = {};
  app.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Submit a job"),
      h("p", { class: "muted small" }, "Empty fields take the preset's value; the preset fills the paper's defaults."))),
    h("section", { class: "card" }, errorBox, form));

  function field(name, label, control, hint) {
    const wrap = h("div", { class: "field", data: { field: name } },
      h("label", { for: `f-${name}` }, label), control,
      hint ? h("div", { class: "hint" }, hint) : null,
      h("div", { class: "field-error", hidden: true }));
    control.id = `f-${name}`;
    fields[name] = { wrap, control };
    return wrap;
  }

  const kind = h("select", { name: "kind" }, KINDS.map((k) => h("option", { value: k, selected: k === (params.get("kind") || "finetune") }, k)));
  const preset = h("select", { name: "preset" });
  const dataset = h("select", { name: "dataset" }, h("option", { value: "" }, "— the preset's data —"));
  const model = h("input", { name: "model", list: "model-options", autocomplete: "off" });
  const modelOptions = h("datalist", { id: "model-options" });
  const loss = h("select", { name: "loss" });
  const epochs = h("input", { name: "epochs", type: "number", min: "1", step: "1" });
  const steps = h("input", { name: "max_steps_per_epoch", type: "number", min: "1", step: "1" });
  const init = h("select", { name: "init" });
  const checkpoint = h("input", { name: "checkpoint", placeholder: "path inside a data root", autocomplete: "off" });
  const split = h("select", { name: "split" }, ["test", "val"].map((s) => h("option", { value: s }, s)));
  const gpus = h("input", { name: "gpus", type: "number", min: "1", step: "1", placeholder: "1" });
  const name = h("input", { name: "name", placeholder: "e.g. fmnist bal-bce", autocomplete: "off" });
  const extra = h("textarea", { name: "extra", placeholder: '{"blr": 0.002, "data": {"num_workers": 0}}' });
  const submit = h("button", { class: "btn btn-primary", type: "submit" }, "Submit job");

  form.append(
    h("div", { class: "form-grid" },
      field("kind", "Kind", kind),
      field("preset", "Preset", preset),
      field("dataset", "Registered dataset", dataset, "optional; overrides the preset's data"),
      field("name", "Name", name)),
    h("div", { class: "form-grid" },
      field("model", "Model", model), modelOptions,
      field("loss", "Loss", loss),
      field("epochs", "Epochs", epochs),
      field("max_steps_per_epoch", "Max steps per epoch", steps, "optional cap, for short runs")),
    h("div", { class: "form-grid" },
      field("init", "Initialise from job", init, "succeeded jobs of the previous stage"),
      field("checkpoint", "…or from a checkpoint", checkpoint),
      field("split", "Split", split),
      field("resources.gpus", "GPUs", gpus)),
    field("extra", "More settings (JSON)", extra, "any other run field, e.g. blr, tau, mask_ratio, data.*"),
    h("div", { class: "form-actions" }, submit, h("a", { href: "#/jobs" }, "Cancel")));

  let presets = { names: [], configs: {}, base: {}, models: {}, losses: [] };
  let succeeded = [];

  function defaultsFor() {
    const configs = preset.value ? presets.configs[preset.value] : presets.base;
    return configs?.[kind.value] || {};
  }

  function syncForm() {
    const k = kind.value;
    const d = defaultsFor();
    model.placeholder = d.model || "";
    epochs.placeholder = d.epochs ?? "";
    steps.placeholder = d.max_steps_per_epoch ?? "";
    modelOptions.replaceChildren(...(presets.models[k] || []).map((m) => h("option", { value: m })));
    const chosen = loss.value;
    loss.replaceChildren(h("option", { value: "" }, d.loss ? `default (${d.loss})` : "default"),
      ...presets.losses.map((l) => h("option", { value: l, selected: l === chosen }, l)));
    fields.loss.wrap.hidden = k !== "finetune";
    fields.split.wrap.hidden = k !== "evaluate";
    fields.epochs.wrap.hidden = k === "evaluate";
    fields.max_steps_per_epoch.wrap.hidden = k === "evaluate";
    const wanted = k === "finetune" ? "pretrain" : k === "evaluate" ? "finetune" : null;
    fields.init.wrap.hidden = !wanted;
    fields.checkpoint.wrap.hidden = !wanted;
    const current = init.value || params.get("init") || "";
    init.replaceChildren(h("option", { value: "" }, k === "finetune" ? "— none (random init) —" : "— choose a finetune job —"),
      ...succeeded.filter((j) => j.kind === wanted).map((j) => h("option", { value: j.id, selected: j.id === current },
        `${j.id}${j.name ? ` · ${j.name}` : ""} · ${j.dataset || j.preset || ""}`)));
  }

  function clearErrors() {
    errorBox.hidden = true;
    for (const { wrap } of Object.values(fields)) {
      wrap.classList.remove("invalid");
      const p = wrap.querySelector(".field-error");
      p.hidden = true;
      p.replaceChildren();
    }
  }

  function fieldFor(path) {
    const parts = path.split(".");
    if (KINDS.includes(parts[0])) parts.shift(); // a discriminated union names the kind first
    const full = parts.join(".");
    if (fields[full]) return { key: full, rest: full };
    if (parts[0] === "init") return { key: parts[1] === "checkpoint" ? "checkpoint" : "init", rest: full };
    if (fields[parts[0]] && parts[0] !== "extra") return { key: parts[0], rest: full };
    if (parts[0] === "resources") return { key: "resources.gpus", rest: full };
    return { key: "extra", rest: full };
  }

  function showErrors(err) {
    const unplaced = [];
    const list = err.fieldErrors;
    if (!list.length) unplaced.push(err.message);
    for (const { field: path, message } of list) {
      const { key, rest } = fieldFor(path || "request");
      const f = fields[key];
      if (!f || f.wrap.hidden || (key === "extra" && !extra.value.trim())) { unplaced.push(`${rest}: ${message}`); continue; }
      f.wrap.classList.add("invalid");
      const p = f.wrap.querySelector(".field-error");
      p.append(h("div", {}, key === "extra" || rest !== key ? `${rest}: ${message}` : message));
      p.hidden = false;
    }
    if (unplaced.length || list.length) {
      errorBox.replaceChildren(h("strong", {}, `The server rejected the job (HTTP ${err.status}).`),
        unplaced.length ? h("ul", {}, unplaced.map((m) => h("li", {}, m))) : h("div", {}, "See the marked fields."));
      errorBox.hidden = false;
    }
  }

  function buildSpec() {
    const k = kind.value;
    let spec = {};
    if (extra.value.trim()) {
      try {
        spec = JSON.parse(extra.value);
      } catch (e) {
        throw new ApiError(422, [{ loc: ["body", "extra"], msg: `not valid JSON: ${e.message}` }]);
      }
      if (typeof spec !== "object" || Array.isArray(spec) || spec === null) {
        throw new ApiError(422, [{ loc: ["body", "extra"], msg: "must be a JSON object of settings" }]);
      }
    }
    spec.kind = k;
    if (preset.value) spec.preset = preset.value;
    if (name.value.trim()) spec.name = name.value.trim();
    if (dataset.value) spec.dataset = dataset.value;
    if (model.value.trim()) spec.model = model.value.trim();
    if (k === "finetune" && loss.value) spec.loss = loss.value;
    if (k !== "evaluate" && epochs.value !== "") spec.epochs = Number(epochs.value);
    if (k !== "evaluate" && steps.value !== "") spec.max_steps_per_epoch = Number(steps.value);
    if (k === "evaluate") spec.split = split.value;
    if (k !== "pretrain" && init.value) spec.init = { job: init.value };
    else if (k !== "pretrain" && checkpoint.value.trim()) spec.init = { checkpoint: checkpoint.value.trim() };
    if (gpus.value !== "") spec.resources = { ...(spec.resources || {}), gpus: Number(gpus.value) };
    return spec;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    try {
      const job = await api.submit(buildSpec());
      toast(`Submitted ${job.id}`);
      window.location.hash = jobHref(job.id);
    } catch (err) {
      if (err instanceof ApiError) showErrors(err);
      else toast(err.message, "error");
    } finally {
      submit.disabled = false;
    }
  });
  kind.addEventListener("change", syncForm);
  preset.addEventListener("change", syncForm);

  Promise.all([
    api.presets(),
    api.datasets().catch(() => ({ items: [] })),
    api.jobs({ status: "succeeded", limit: 100 }),
  ]).then(([p, ds, jobs]) => {
    presets = normalisePresets(p);
    const wantedPreset = params.get("preset") || (presets.names.includes("fashion-mnist-lt") ? "fashion-mnist-lt" : presets.names[0]);
    preset.replaceChildren(h("option", { value: "" }, "— none (paper defaults) —"),
      ...presets.names.map((n) => h("option", { value: n, selected: n === wantedPreset }, n)));
    dataset.append(...(ds.items || []).map((d) => h("option", { value: d.name }, `${d.name} (${d.kind})`)));
    succeeded = jobs.items;
    syncForm();
  }).catch((err) => toast(`Cannot load the form's choices: ${err.message}`, "error"));
  return { dispose: () => {} };
}

// ------------------------------------------------------------------------------------------
// compare view

function hasAccuracy(job) {
  return Number.isFinite(job.result?.overall);
}

function compareView(params) {
  const selected = new Set((params.get("ids") || "").split(",").filter(Boolean));
  const known = new Map();
  let cursor = null;
  const pickBody = h("tbody");
  const more = h("button", { class: "btn btn-small", type: "button", hidden: true }, "Load more");
  const output = h("div", { id: "comparison" });
  const extras = h("div", { id: "comparison-details" });
  const details = compareDetails({ h, card, api, palette: PALETTE, jobHref, jobLabel, fmtPct });

  app.replaceChildren(
    h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Compare jobs"),
      h("p", { class: "muted small" }, "Pick finished jobs to see their many / medium / few / overall accuracy side by side."))),
    output,
    extras,
    card("Finished jobs with results",
      h("div", { class: "table-wrap" }, h("table", { id: "compare-pick" },
        h("thead", {}, h("tr", {}, ["", "Job", "Kind", "Dataset", "Model", "Loss", "Overall", "Finished"]
          .map((t) => h("th", { class: t === "Overall" ? "num" : null }, t)))),
        pickBody)),
      h("div", { class: "pager" }, more)));

  function syncHash() {
    const ids = [...selected].join(",");
    window.history.replaceState(null, "", `#/compare${ids ? `?ids=${encodeURIComponent(ids).replaceAll("%2C", ",")}` : ""}`);
  }

  function renderPicker() {
    const jobs = [...known.values()].filter(hasAccuracy);
    if (!jobs.length) {
      pickBody.replaceChildren(h("tr", {}, h("td", { colspan: 8, class: "empty" }, "No finished finetune or evaluate jobs yet.")));
      return;
    }
    pickBody.replaceChildren(...jobs.map((j) => h("tr", { data: { jobId: j.id } },
      h("td", {}, h("input", {
        type: "checkbox", checked: selected.has(j.id), "aria-label": `compare ${j.id}`,
        onchange: (e) => { if (e.target.checked) selected.add(j.id); else selected.delete(j.id); syncHash(); renderComparison(); },
      })),
      jobCell(j), h("td", {}, j.kind), h("td", {}, j.dataset || j.preset || "–"),
      h("td", { class: "mono" }, j.model || "–"), h("td", {}, j.loss || "–"),
      h("td", { class: "num" }, fmtPct(j.result.overall)), timeCell(j.finished_at))));
  }

  function renderComparison() {
    const jobs = [...selected].map((id) => known.get(id)).filter((j) => j && hasAccuracy(j));
    if (!jobs.length) {
      output.replaceChildren(card(null, h("p", { class: "muted" }, "Select two or more jobs below.")));
      details.render(extras, []);
      return;
    }
    const label = (j) => `${jobLabel(j)}${j.loss ? ` (${j.loss})` : ""}`;
    const cols = [["many", "Many"], ["medium", "Medium"], ["few", "Few"], ["overall", "Overall"], ["top5", "Top-5"], ["ece", "ECE"]];
    const warning = mismatch(jobs);
    const best = Object.fromEntries(cols.map(([k]) => {
      if (warning) return [k, null];
      const vals = jobs.map((j) => j.result[k]).filter(Number.isFinite);
      const top = k === "ece" ? Math.min(...vals) : Math.max(...vals);
      return [k, vals.length && vals.some((v) => v !== top) ? top : null];
    }));
    const table = h("table", { id: "compare-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Job"), h("th", {}, "Model"), h("th", {}, "Dataset"), h("th", {}, "Split"),
        cols.map(([, t]) => h("th", { class: "num" }, t)))),
      h("tbody", {}, jobs.map((j, i) => h("tr", {},
        h("td", {}, h("span", { class: "swatch", style: `background:${PALETTE[i % PALETTE.length]}` }),
          h("a", { href: jobHref(j.id) }, label(j))),
        h("td", { class: "mono" }, j.model || "–"), h("td", {}, j.dataset || j.preset || "–"), h("td", {}, j.result.split || "–"),
        cols.map(([k]) => h("td", { class: "num" }, j.result[k] === best[k] ? h("strong", {}, fmtPct(j.result[k])) : fmtPct(j.result[k])))))));
    const bars = h("div", { class: "chart-box", id: "chart-compare" });
    output.replaceChildren(card("Accuracy by shot group (%)",
      warning ? h("div", { class: "compare-warning", id: "compare-warning", role: "alert" }, warning) : null,
      bars, h("div", { class: "table-wrap section" }, table),
      h("p", { class: "chart-note" }, warning ? "Nothing is marked best: the runs do not compare." : "Best value per column in bold (lowest for ECE).")));
    details.render(extras, jobs).catch((err) => toast(err.message, "error"));
    barChart(bars, GROUPS, jobs.map((j, i) => ({
      name: label(j), color: PALETTE[i % PALETTE.length], values: GROUPS.map((g) => j.result[g]),
    })), { yMax: 100, yLabel: "top-1 (%)", legend: true, height: 280 });
  }

  async function load() {
    const data = await api.jobs({ status: "succeeded", limit: 100, cursor });
    for (const j of data.items) known.set(j.id, j);
    cursor = data.next_cursor;
    more.hidden = !cursor;
    const missing = [...selected].filter((id) => !known.has(id));
    await Promise.all(missing.map((id) => api.job(id).then((j) => known.set(id, j)).catch(() => selected.delete(id))));
    renderPicker();
    renderComparison();
  }

  more.addEventListener("click", () => load().catch((err) => toast(err.message, "error")));
  load().catch((err) => toast(err.message, "error"));
  return { dispose: () => {} };
}

// ------------------------------------------------------------------------------------------
// start

handleUnauthorized(() => {
  if (currentView) currentView.dispose();
  currentView = null;
  setToken(null);
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-out").hidden = true;
  setLive(false);
  renderSignIn("The server rejected the stored token; sign in again.");
});
document.getElementById("sign-out").addEventListener("click", () => signOut());
// ------------------------------------------------------------------------------------------
// datasets

const datasetHref = (name) => `#/datasets/${encodeURIComponent(name)}`;

function shotGroupOf(count) {
  if (count > MANY_ABOVE) return "many";
  return count < FEW_BELOW ? "few" : "medium";
}

function datasetProgress(d) {
  const p = d.progress;
  const frac = d.status === "ready" ? 1 : p && p.total ? p.done / p.total : 0;
  const text = d.status === "profiling" ? `${p ? p.done : 0} of ${p && p.total !== null ? p.total : "?"} images read` : d.status;
  return h("div", { class: "progress", data: { fraction: frac.toFixed(4) } },
    h("div", { class: "progress-track" },
      h("div", { class: `progress-fill${d.status === "ready" ? " done" : ""}`, style: `width: ${(frac * 100).toFixed(1)}%` })),
    h("span", { class: "progress-text" }, text));
}

function datasetsView() {
  const tbody = h("tbody");
  app.replaceChildren(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Datasets"),
        h("p", { class: "muted small" }, "Registered with POST /datasets; an image folder is profiled once."))),
    h("section", { class: "card" }, h("div", { class: "table-wrap" },
      h("table", { class: "jobs-table datasets-table" },
        h("thead", {}, h("tr", {}, ["Dataset", "Kind", "Status", "Classes", "Training images", "Registered"].map((t) => h("th", {}, t)))),
        tbody))));

  async function refresh() {
    const data = await api.datasets();
    if (!data.items.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No datasets yet — register one with POST /datasets.")));
    } else {
      tbody.replaceChildren(...data.items.map((d) => h("tr", {
        class: "clickable", data: { dataset: d.name, status: d.status },
        onclick: (e) => { if (e.target.tagName !== "A") window.location.hash = datasetHref(d.name); },
      },
      h("td", {}, h("a", { href: datasetHref(d.name) }, d.name)),
      h("td", {}, h("span", { class: "badge badge-kind" }, d.kind)),
      h("td", {}, d.status === "profiling" ? datasetProgress(d) : badge(d.status)),
      h("td", { class: "num" }, d.classes.length),
      h("td", { class: "num" }, d.num_train),
      timeCell(d.created_at))));
    }
    setLive(data.items.some((d) => d.status === "profiling"));
  }
  const poller = new Poller(refresh);
  return { dispose: () => poller.stop() };
}

function profileRows(p) {
  const row = (label, value, cls = null) => h("tr", {}, h("th", {}, label), h("td", { class: cls }, value));
  const rows = [];
  const images = p.images || {};
  rows.push(row("Images", Object.entries(images).map(([s, n]) => `${s} ${n}`).join(" · ")));
  rows.push(row("Classes", `${p.num_classes}${p.imbalance_ratio ? ` · imbalance ${p.imbalance_ratio}× (largest / smallest training class)` : ""}`));
  const z = p.sizes || {};
  if (z.median_side) {
    rows.push(row("Image size", z.uniform && z.example ? `${z.example[0]} × ${z.example[1]} px (all alike)`
      : `short side ${z.min_side}–${z.max_side} px, median ${z.median_side} px`));
  }
  rows.push(row("Colour", `${p.colour} (${p.channels} channel${p.channels === 1 ? "" : "s"})`));
  const stat = (values) => (values || []).map((v) => v.toFixed(3)).join(", ");
  rows.push(row("Mean / std", `${stat(p.mean)} / ${stat(p.std)} (from ${p.stats_images} training images)`));
  rows.push(row("Formats", Object.entries(p.formats || {}).map(([f, n]) => `${f} ${n}`).join(" · ") || "–"));
  const missing = Object.entries(p.missing_classes || {});
  rows.push(row("Missing classes", missing.length ? missing.map(([s, names]) => `${s}/: ${names.join(", ")}`).join(" · ") : "none",
    missing.length ? "problem" : null));
  const extra = Object.entries(p.extra_classes || {});
  if (extra.length) rows.push(row("Classes not in train/", extra.map(([s, names]) => `${s}/: ${names.join(", ")}`).join(" · "), "problem"));
  rows.push(row("Unreadable files", p.unreadable_count
    ? `${p.unreadable_count}: ${(p.unreadable || []).join(", ")}` : "none", p.unreadable_count ? "problem" : null));
  return h("table", { class: "profile-table", id: "dataset-profile" }, h("tbody", {}, rows));
}

function datasetView(name) {
  const head = h("div", { class: "page-head" });
  const statusBox = h("section", { class: "card", id: "dataset-status" });
  const chartBox = h("div", { class: "chart-box", id: "chart-class-counts" });
  const groupsBox = h("div", { id: "shot-groups" });
  const profileBox = h("section", { class: "card", id: "profile-card", hidden: true });
  app.replaceChildren(
    h("p", { class: "small" }, h("a", { href: "#/datasets" }, "← All datasets")),
    head, statusBox,
    card("Training images per class (log scale, largest first)", chartBox, groupsBox),
    profileBox);

  function render(d) {
    head.replaceChildren(h("div", {}, h("h1", {}, d.name), h("p", { class: "muted small mono" }, d.root || "bundled data")),
      h("div", { class: "actions" }, h("span", { class: "badge badge-kind" }, d.kind), badge(d.status)));
    const parts = [h("h2", {}, "Status"), datasetProgress(d)];
    if (d.status_reason) parts.push(h("p", { class: d.status === "failed" ? "problem" : "muted small", id: "status-reason" }, d.status_reason));
    statusBox.replaceChildren(...parts);
    statusBox.className = `card${d.status === "failed" ? " failure" : ""}`;
    const bars = d.classes.map((c, i) => ({ label: c, value: d.class_counts[i], group: shotGroupOf(d.class_counts[i]) }))
      .sort((a, b) => b.value - a.value)
      .map((b) => ({ ...b, color: GROUP_COLORS[b.group] }));
    logBarChart(chartBox, bars, {
      yLabel: "training images",
      hlines: [{ y: MANY_ABOVE, label: `many > ${MANY_ABOVE}` }, { y: FEW_BELOW, label: `few < ${FEW_BELOW}` }],
      legend: ["many", "medium", "few"].map((g) => ({ name: g, color: GROUP_COLORS[g] })),
    });
    groupsBox.replaceChildren(h("p", { class: "chart-note" }, ["many", "medium", "few"].map((g) => {
      const members = d.shot_groups[g] || [];
      return h("span", { class: "nowrap", data: { group: g, count: members.length } },
        h("span", { class: "swatch", style: `background:${GROUP_COLORS[g]}` }),
        `${g}: ${members.length} class${members.length === 1 ? "" : "es"}  `);
    }), ` (many: > ${MANY_ABOVE} training images, medium: ${FEW_BELOW}–${MANY_ABOVE}, few: < ${FEW_BELOW})`));
    profileBox.hidden = !d.profile;
    if (d.profile) profileBox.replaceChildren(h("h2", {}, "Profile"), profileRows(d.profile));
  }

  async function refresh() {
    const d = await api.dataset(name);
    render(d);
    setLive(d.status === "profiling");
    return d.status === "profiling" ? undefined : false;
  }
  const poller = new Poller(refresh);
  return { dispose: () => poller.stop() };
}

window.addEventListener("hashchange", route);
adoptTokenFromUrl();
route();
