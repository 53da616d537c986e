// The REST calls of the dashboard (the contract in docs/service.md) and the stored API token.

const TOKEN_KEY = "livt.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(ApiError.describe(status, detail));
    this.status = status;
    this.detail = detail;
  }

  /** [{field, message}] from a 422 answer ({"detail": [{"loc": [...], "msg": ...}]}). */
  get fieldErrors() {
    if (!Array.isArray(this.detail)) return [];
    return this.detail.map((d) => ({
      field: (d.loc || []).filter((p) => p !== "body" && p !== "query" && p !== "path").join("."),
      message: d.msg || String(d),
    }));
  }

  static describe(status, detail) {
    if (Array.isArray(detail)) {
      return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
    }
    return typeof detail === "string" ? detail : `HTTP ${status}`;
  }
}

export function getToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

/**
 * Moves a `?token=` from the address into storage and removes it from the address bar, so that
 * the token neither stays in the history nor shows on the page. Returns true when one was found.
 */
export function adoptTokenFromUrl() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (!token) return false;
  setToken(token);
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  return true;
}

/** True when the server accepts `token`; false on 401 (other failures throw). */
export async function checkToken(token) {
  const response = await fetch("/jobs?limit=1", {
    headers: { Accept: "application/json", Authorization: `Bearer ${token}` }, cache: "no-store",
  });
  if (response.status === 401) return false;
  if (!response.ok) throw new ApiError(response.status, response.statusText);
  return true;
}

let onUnauthorized = () => {};
export function handleUnauthorized(callback) {
  onUnauthorized = callback;
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
  });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      // a non-JSON error page: keep the status text
    }
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, detail);
  }
  return response.status === 204 ? null : response.json();
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export const api = {
  jobs: (params = {}) => request("GET", `/jobs${query(params)}`),
  job: (id) => request("GET", `/jobs/${encodeURIComponent(id)}`),
  submit: (spec) => request("POST", "/jobs", spec),
  cancel: (id) => request("POST", `/jobs/${encodeURIComponent(id)}/cancel`),
  retry: (id) => request("POST", `/jobs/${encodeURIComponent(id)}/retry`),
  metrics: (id) => request("GET", `/jobs/${encodeURIComponent(id)}/metrics`),
  stepMetrics: (id) => request("GET", `/jobs/${encodeURIComponent(id)}/metrics?level=step`),
  logs: (id, offset, limit = 500) => request("GET", `/jobs/${encodeURIComponent(id)}/logs${query({ offset, limit })}`),
  artifacts: (id) => request("GET", `/jobs/${encodeURIComponent(id)}/artifacts`),
  pipeline: (id) => request("GET", `/pipelines/${encodeURIComponent(id)}`),
  presets: () => request("GET", "/presets"),
  datasets: () => request("GET", "/datasets"),
  dataset: (name) => request("GET", `/datasets/${encodeURIComponent(name)}`),
  sweeps: () => request("GET", "/sweeps"),
  sweep: (id) => request("GET", `/sweeps/${encodeURIComponent(id)}`),
  cancelSweep: (id) => request("POST", `/sweeps/${encodeURIComponent(id)}/cancel`),
  sweepTable: (id, format) => requestText(`/sweeps/${encodeURIComponent(id)}/table${query({ format })}`),
};

/** GET of a text answer (the sweep table exports). */
async function requestText(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${getToken()}` }, cache: "no-store" });
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, `HTTP ${response.status}`);
  }
  return response.text();
}

/** Downloads an artifact with the bearer header (a plain link cannot carry it). */
export async function downloadArtifact(url, name) {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${getToken()}` } });
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, `download of ${name} failed (HTTP ${response.status})`);
  }
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}

/** An artifact as a blob: URL (for an <img>), fetched with the bearer header. */
export async function artifactObjectUrl(url, type = "application/octet-stream") {
  const response = await fetch(url, { headers: { Authorization: `Bearer ${getToken()}` }, cache: "no-store" });
  if (!response.ok) {
    if (response.status === 401) onUnauthorized();
    throw new ApiError(response.status, `artifact unavailable (HTTP ${response.status})`);
  }
  // the server sends artifacts as octet-stream; give an image its own type
  return URL.createObjectURL(new Blob([await response.blob()], { type }));
}
