// The AOS Evidence Plane console: a small hash-routed page over the public REST API.
//
// Why this shape (docs/ARCHITECTURE.md): no build step and no framework — every call is the
// same REST call a client makes, with the signed-in bearer token. DOM nodes are built with
// textContent only (never innerHTML), so nothing the API returns can become markup; the
// Content-Security-Policy allows scripts and styles from this origin only.
"use strict";

const TOKEN_KEY = "aos.token";
const PAGE_SIZE = 20;

// ---------------------------------------------------------------- DOM helpers

function h(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") Object.assign(node.style, value); // CSSOM: allowed by style-src 'self'
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function link(href, text, props) {
  return h("a", Object.assign({ href }, props || {}), text);
}

function badge(text, kind) {
  return h("span", { class: `badge badge-${kind || "neutral"}` }, text);
}

// Hash format 2 (docs/ERASURE.md): a record's committed payload fields, each PRESENT, ERASED (with
// the erasure that took it) or MISSING. What stands for an erased or missing field: never an empty
// value passed off as the content.
function payloadGone(record, field) {
  const p = ((record || {}).payloads || []).find((c) => c.field === field);
  if (!p || (p.state !== "PAYLOAD_STATE_ERASED" && p.state !== "PAYLOAD_STATE_MISSING")) return null;
  if (p.state === "PAYLOAD_STATE_MISSING") {
    return h("span", { class: "payload-gone", "data-field": field }, badge("MISSING", "bad"), " neither payload nor erasure recorded");
  }
  return h("span", { class: "payload-gone payload-erased", "data-field": field, "data-erasure": p.erasure_id || "" },
    badge("ERASED", "warn"), " by erasure ", h("code", {}, p.erasure_id || "?"),
    h("span", { class: "help" }, " — the commitment ", h("code", { class: "hash", title: p.commitment }, short(p.commitment)),
      " and every hash above it remain"));
}

// A payload field as shown: its erased (or missing) state, else `shown` (a value, or a function of none).
function payloadOr(record, field, shown) {
  return payloadGone(record, field) || (typeof shown === "function" ? shown() : shown);
}

function announce(text) {
  const status = document.getElementById("status");
  status.textContent = "";
  window.setTimeout(() => { status.textContent = text; }, 50);
}

// ---------------------------------------------------------------- formatting

// "BUDGET_STATUS_NEAR_THRESHOLD" → "NEAR_THRESHOLD": the enum's name without its type prefix.
function label(value, prefix) {
  if (value === undefined || value === null || value === "") return "—";
  const s = String(value);
  return prefix && s.startsWith(prefix) ? s.slice(prefix.length) : s;
}

function money(m) {
  if (!m) return "—";
  const cents = Number(m.amount_cents || 0);
  return `${(cents / 100).toFixed(2)} ${m.currency_code || ""}`.trim();
}

function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function timeEl(ts) {
  return ts ? h("time", { datetime: ts }, when(ts)) : "—";
}

function short(hash) {
  return hash ? `${String(hash).slice(0, 16)}…` : "—";
}

function json(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

function b64ToBytes(b64) {
  const bin = atob(b64 || "");
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i += 1) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(httpStatus, status) {
    super((status && status.message) || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.status = status || {};
    const info = (this.status.details || []).find((d) => d.reason);
    this.reason = info ? info.reason : "";
  }
}

function token() {
  return window.sessionStorage.getItem(TOKEN_KEY);
}

async function call(path, options) {
  const opts = options || {};
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(opts.query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = { Authorization: `Bearer ${token()}` };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const reply = await fetch(url, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    cache: "no-store",
  });
  if (opts.raw && reply.ok) return reply;
  const text = await reply.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : {}; } catch (e) { parsed = { message: text }; }
  if (!reply.ok) {
    if (reply.status === 401) {
      window.sessionStorage.removeItem(TOKEN_KEY);
      throw new ApiError(401, parsed);
    }
    throw new ApiError(reply.status, parsed);
  }
  return parsed;
}

const api = (path, query) => call(path, { query });

// The enums' values (filters, export options) come from the gateway's own OpenAPI document,
// so the console offers exactly what the contract accepts. Loaded once, before the first page.
let contract = null;

async function loadContract() {
  if (!contract) {
    const reply = await fetch("/openapi.json", { cache: "no-store" });
    contract = reply.ok ? await reply.json() : { components: { schemas: {} } };
  }
  return contract;
}

function enumValues(name, pkg) {
  const schema = (contract.components.schemas || {})[`${pkg || "aos.evidence.v1"}.${name}`] || {};
  return (schema.enum || []).filter((v) => !v.endsWith("_UNSPECIFIED"));
}
const enc = encodeURIComponent;

// ---------------------------------------------------------------- routing

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "");
  const [path, qs] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(qs || "") };
}

function hashFor(path, query) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") qs.set(k, v);
  const s = qs.toString();
  return `#${path}${s ? `?${s}` : ""}`;
}

const ROUTES = {
  overview: overviewPage,
  runs: (parts, q) => (parts[1] ? runPage(parts[1], parts[2] || "envelope", q) : runsPage(q)),
  system: (parts, q) => (parts[1] ? systemRunPage(parts[1], parts[2] || "snapshot") : systemPage(q)),
  audit: (parts, q) => (parts[1] ? auditEntryPage(parts[1]) : auditPage(q)),
  integrity: integrityPage,
  exports: (parts, q) => (parts[1] ? exportPage(parts[1], q) : exportsPage(q)),
  retention: (parts, q) => retentionPage(q),
  signin: signinPage,
};

let renderCount = 0;

async function render() {
  const { parts, query } = parseHash();
  const section = parts[0] || "overview";
  const signedIn = Boolean(token());
  document.getElementById("signout").hidden = !signedIn;
  document.querySelectorAll("nav a[data-section]").forEach((a) => {
    if (a.dataset.section === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  const main = document.getElementById("main");
  const mine = ++renderCount;
  const page = signedIn ? (ROUTES[section] || notFoundPage) : signinPage;
  const content = h("div", { class: "page", "aria-busy": "true" }, h("p", { class: "loading" }, "Loading…"));
  main.replaceChildren(content);
  try {
    await loadContract();
    const built = await page(parts, query);
    if (mine !== renderCount) return; // a newer navigation won
    main.replaceChildren(built);
  } catch (err) {
    if (mine !== renderCount) return;
    main.replaceChildren(errorPage(err));
  }
  main.dataset.view = String(mine); // which navigation the page shows (the browser tests wait on it)
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Console"} — AOS Evidence Plane`;
  if (renderCount > 1) main.focus();
}

function errorPage(err) {
  if (err instanceof ApiError && err.httpStatus === 401) {
    return signinPage([], new URLSearchParams(), "Your token was refused (expired or invalid): sign in again.");
  }
  if (err instanceof ApiError && err.httpStatus === 404) {
    // Another tenant's id answers exactly like a missing one.
    return h("section", { class: "page" }, h("h1", {}, "Not found"),
      h("p", {}, "There is no such record for your tenant."), link("#/overview", "Back to the overview"));
  }
  const reason = err instanceof ApiError && err.reason ? ` (${err.reason})` : "";
  return h("section", { class: "page" }, h("h1", {}, "Something went wrong"),
    h("p", { role: "alert" }, `${err.message}${reason}`));
}

function notFoundPage() {
  return errorPage(new ApiError(404, {}));
}

// ---------------------------------------------------------------- sign-in

function signinPage(parts, query, message) {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true,
    "aria-describedby": "token-help" });
  const form = h("form", {
    class: "signin",
    onsubmit: (event) => {
      event.preventDefault();
      window.sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      window.location.hash = "#/overview";
      render();
    },
  },
  h("label", { for: "token" }, "Bearer token"), input,
  h("p", { id: "token-help", class: "help" },
    "A JWT for your tenant. It stays in this tab (sessionStorage) and is sent only to this gateway."),
  h("button", { type: "submit" }, "Sign in"));
  return h("section", { class: "page" }, h("h1", {}, "Sign in"),
    message ? h("p", { role: "alert", class: "warn" }, message) : null, form);
}

// ---------------------------------------------------------------- tables and paging

function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "empty" }, empty || "Nothing here.");
  return h("table", {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.title)))),
    h("tbody", {}, rows.map((row) => h("tr", { class: row.__class || null },
      columns.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c.cell(row)) : h("td", {}, c.cell(row))))))));
}

// Keyset paging goes forward only (the API's tokens lead to the next page), so the way back is
// kept here: each page's address, keyed by the address of the page after it, in this tab's
// sessionStorage. A page opened directly (a bookmark, a reload after the tab closed) offers
// "First page" only.
const BACK_KEY = "aos.pages.back";

function backLinks() {
  try { return JSON.parse(window.sessionStorage.getItem(BACK_KEY) || "{}"); } catch (e) { return {}; }
}

function rememberBack(next, current) {
  const links = backLinks();
  delete links[next];
  links[next] = current;
  const keys = Object.keys(links);
  for (const k of keys.slice(0, Math.max(0, keys.length - 500))) delete links[k]; // the newest 500
  window.sessionStorage.setItem(BACK_KEY, JSON.stringify(links));
}

function pager(base, query, reply, what, tokenParam) {
  const param = tokenParam || "page_token";
  const total = reply.total_size !== undefined
    ? `${reply.total_size_is_estimate ? "about " : ""}${reply.total_size} ${what}` : "";
  const here = hashFor(base, Object.fromEntries(query));
  const links = [];
  if (query.get(param)) {
    const first = Object.fromEntries(query);
    delete first[param];
    const previous = backLinks()[here];
    links.push(link(hashFor(base, first), "First page"));
    if (previous) links.push(link(previous, "Previous page", { rel: "prev" }));
  }
  if (reply.next_page_token) {
    const next = hashFor(base, Object.assign(Object.fromEntries(query), { [param]: reply.next_page_token }));
    rememberBack(next, here);
    links.push(link(next, "Next page", { rel: "next" }));
  }
  return h("nav", { class: "pager", "aria-label": `${what} pages` }, h("span", {}, total), links);
}

// A filter form whose fields are query parameters of the list call; submitting moves the hash.
function filterForm(base, query, fields) {
  const inputs = {};
  const form = h("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      const next = {};
      for (const [name, input] of Object.entries(inputs)) {
        if (input.value) next[name] = input.type === "date" ? `${input.value}T00:00:00Z` : input.value;
      }
      window.location.hash = hashFor(base, next);
    },
  });
  for (const f of fields) {
    const id = `f-${f.name.replace(/\W/g, "-")}`;
    let input;
    const current = query.get(f.name) || "";
    if (f.options) {
      input = h("select", { id, name: f.name }, h("option", { value: "" }, "any"),
        f.options.map((o) => h("option", { value: o, selected: o === current }, label(o, f.prefix))));
    } else if (f.date) {
      input = h("input", { id, name: f.name, type: "date", value: current.slice(0, 10) });
    } else {
      input = h("input", { id, name: f.name, type: "text", value: current });
    }
    inputs[f.name] = input;
    form.append(h("div", { class: "field" }, h("label", { for: id }, f.title), input));
  }
  form.append(h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"),
    link(`#${base}`, "Clear")));
  return form;
}

// The lists' search, sort and order (seed 003 §4.5) as filter fields, and the caption that
// says the order a table shows.
function orderFields(sortEnum, sortPrefix) {
  return [
    { name: "search", title: "Search" },
    { name: "sort", title: "Sort by", options: enumValues(sortEnum, "aos.logs.v1"), prefix: sortPrefix },
    { name: "order", title: "Order", options: enumValues("SortOrder"), prefix: "SORT_ORDER_" },
  ];
}

function orderCaption(what, query, sortPrefix) {
  const ascending = query.get("order") === "SORT_ORDER_ASCENDING";
  const byTime = ascending ? "oldest first" : "newest first";
  const sort = label(query.get("sort") || "", sortPrefix);
  const sorted = sort === "—" || sort === "CREATED_AT" ? byTime
    : `by ${sort.toLowerCase()} ${ascending ? "ascending" : "descending"}, then ${byTime}`;
  return `${what}${query.get("search") ? ` matching “${query.get("search")}”` : ""}, ${sorted}`;
}

// An export takes a list's filters, not its search: said instead of offering the wrong slice.
function exportOrNote(query, form) {
  return query.get("search")
    ? h("p", { class: "help", id: "export-needs-filters" }, "Exports take the filters, not the search: clear the search to export this list.")
    : form;
}

function listQuery(query) {
  const q = Object.fromEntries(query);
  q.page_size = q.page_size || PAGE_SIZE;
  return q;
}

// ---------------------------------------------------------------- charts (uPlot)

// A uPlot chart of real API data: xs are unix seconds, each series {label, values, bars}.
function chart(title, xs, series, note) {
  const box = h("figure", { class: "chart" }, h("figcaption", {}, title));
  const target = h("div", { class: "plot", role: "img", "aria-label": `${title} (chart; the table below has the numbers)` });
  box.append(target);
  if (note) box.append(h("p", { class: "help" }, note));
  if (!xs.length) {
    target.replaceWith(h("p", { class: "empty" }, "No data for this chart."));
    return box;
  }
  const colors = ["#1f5fbf", "#b3261e", "#2e7d32", "#8e44ad"];
  window.requestAnimationFrame(() => {
    if (!window.uPlot || !target.isConnected) return;
    const opts = {
      width: Math.max(320, Math.min(900, target.clientWidth || 640)),
      height: 220,
      series: [{}].concat(series.map((s, i) => {
        const color = s.color || colors[i % colors.length];
        if (s.points) { // marks only: a dot on each day that has a value, no line
          return { label: s.label, stroke: color, fill: color, width: 0, paths: () => null,
            points: { show: true, size: 10, stroke: color, fill: color } };
        }
        return {
          label: s.label,
          stroke: color,
          width: 2,
          fill: s.bars ? `${color}33` : undefined,
          paths: s.bars && window.uPlot.paths.bars ? window.uPlot.paths.bars({ size: [0.6, 40] }) : undefined,
          dash: s.dash,
        };
      })),
      axes: [{}, { size: 60 }],
    };
    if (series.some((s) => s.bars)) {
      // Half a day either side, so the first and last bars are drawn whole.
      opts.scales = { x: { time: true, range: (u, min, max) => [min - 43200, max + 43200] } };
    }
    // eslint-disable-next-line no-new
    new window.uPlot(opts, [xs, ...series.map((s) => s.values)], target);
  });
  return box;
}

function dayStart(date) {
  return new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()));
}

// ---------------------------------------------------------------- Overview

const PULSE_KIND = { PULSE_STATUS_HEALTHY: "ok", PULSE_STATUS_ATTENTION_NEEDED: "warn", PULSE_STATUS_CRITICAL: "bad" };
const BUDGET_KIND = { BUDGET_STATUS_OK: "ok", BUDGET_STATUS_NEAR_THRESHOLD: "warn", BUDGET_STATUS_BREACHED: "bad" };
const BUDGET_WORD = { BUDGET_STATUS_OK: "OK", BUDGET_STATUS_NEAR_THRESHOLD: "NEAR", BUDGET_STATUS_BREACHED: "BREACHED" };
const PRIORITY_KIND = { DECISION_PRIORITY_CRITICAL: "bad", DECISION_PRIORITY_HIGH: "warn" };

// Where each domain count's records are in this console.
const DOMAIN_LINKS = {
  Incidents: hashFor("/audit", { entity_type: "AUDIT_ENTITY_TYPE_INCIDENT" }),
  Policies: hashFor("/audit", { entity_type: "AUDIT_ENTITY_TYPE_POLICY_PROPOSAL" }),
  Activity: "#/runs",
};

// Where the evidence behind a decision or an entity lives in this console.
function evidenceLink(entityType, entityId) {
  const type = label(entityType, "AUDIT_ENTITY_TYPE_");
  if (type === "INCIDENT") {
    return h("span", {}, link(hashFor("/audit", { entity_type: entityType }), "incident audit trail"), " · ",
      link(hashFor("/exports", { incident_id: entityId }), "export the incident"));
  }
  return link(hashFor("/audit", { entity_type: entityType }), `${type.toLowerCase().replace(/_/g, " ")} audit trail`);
}

async function overviewPage(parts, query) {
  const [hl, costs, decisions] = await Promise.all([
    api("/api/v1/runtime/overview/highlights"),
    api("/api/v1/runtime/overview/costs"),
    api("/api/v1/runtime/overview/decisions", { page_size: query.get("decisions_page_size") || 50,
      page_token: query.get("decisions_token") }),
  ]);
  const pulse = hl.pulse || {};
  const n = (v) => Number(v || 0);
  // The reason is the server's (Pulse.reason, from the counts that decide the status); the
  // links only lead to the records behind it.
  const evidence = [];
  if (n(pulse.active_incidents)) {
    evidence.push(h("li", {}, link(hashFor("/audit", { entity_type: "AUDIT_ENTITY_TYPE_INCIDENT" }), "incidents' audit trail")));
  }
  if (n(pulse.pending_decisions)) {
    evidence.push(h("li", {}, link("#/overview", "the decisions waiting", { "data-jump": "decisions" })));
  }
  if (n(pulse.recent_breaches)) {
    evidence.push(h("li", {}, link(hashFor("/runs", { has_violation: "true" }), "runs with a violation")));
  }
  const pulseBox = h("section", { class: "card pulse", "aria-labelledby": "pulse-h" },
    h("h2", { id: "pulse-h" }, "Pulse"),
    h("p", { class: "pulse-status" }, badge(label(pulse.status, "PULSE_STATUS_"), PULSE_KIND[pulse.status])),
    h("p", { id: "pulse-reason" }, pulse.reason || "—"),
    evidence.length ? h("div", {}, h("p", {}, "See:"), h("ul", { class: "reasons" }, evidence)) : null,
    h("p", { class: "help" }, "Last activity ", timeEl(hl.last_activity_at), " · computed ", timeEl(hl.computed_at)));

  const counts = h("section", { class: "card", "aria-labelledby": "counts-h" }, h("h2", { id: "counts-h" }, "Domains"),
    h("ul", { class: "counts" }, (hl.domain_counts || []).map((d) => h("li", {},
      h("span", { class: "count-domain" }, DOMAIN_LINKS[d.domain] ? link(DOMAIN_LINKS[d.domain], d.domain) : d.domain),
      h("span", { class: "count-total" }, `${d.total_is_estimate ? "≈" : ""}${d.total}`),
      h("span", { class: "count-detail" }, `${d.pending} pending · ${d.critical} critical`)))));

  const limits = costs.limits || [];
  const budgetRows = limits.map((l) => {
    const used = Number((l.used_value || {}).amount_cents || 0);
    const max = Number((l.max_value || {}).amount_cents || 0);
    const pct = max > 0 ? Math.min(100, (used / max) * 100) : 0;
    const bar = h("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": String(max),
      "aria-valuenow": String(Math.min(used, max)), "aria-label": `${l.name}: ${money(l.used_value)} of ${money(l.max_value)}` },
    h("div", { class: `bar-fill bar-${BUDGET_KIND[l.status] || "ok"}`, style: { width: `${pct}%` } }));
    return h("li", { class: "budget" },
      h("div", { class: "budget-head" }, h("strong", {}, l.name || l.limit_id), " ",
        badge(BUDGET_WORD[l.status] || label(l.status, "BUDGET_STATUS_"), BUDGET_KIND[l.status])),
      h("div", { class: "help" }, `${label(l.scope, "LIMIT_SCOPE_")} ${l.scope_id || ""} · resets ${label(l.reset_period, "RESET_PERIOD_")}`,
        " · window ", timeEl((l.window || {}).start), " → ", timeEl((l.window || {}).end)),
      bar,
      h("div", {}, `${money(l.used_value)} of ${money(l.max_value)} (${(Number(l.utilization_bp || 0) / 100).toFixed(1)}%) · `,
        `${money(l.remaining_value)} left · `, evidenceLink("AUDIT_ENTITY_TYPE_LIMIT", l.limit_id)));
  });
  const violations = costs.violations || {};
  const costBox = h("section", { class: "card wide", "aria-labelledby": "costs-h" }, h("h2", { id: "costs-h" }, "Costs and budgets"),
    h("p", {}, `Spend this period (`, timeEl((costs.period || {}).start), " → ", timeEl((costs.period || {}).end), `): `,
      h("strong", {}, money((costs.actuals || {}).llm_run_cost)), ` · ${violations.breach_count || 0} breach(es), overage `,
      money(violations.total_overage)),
    budgetRows.length ? h("ul", { class: "budgets" }, budgetRows) : h("p", { class: "empty" }, "No budgets are defined."),
    h("div", { id: "cost-chart" }, h("p", { class: "loading" }, "Loading the cost history…")));

  const decisionRows = (decisions.decisions || []);
  const decisionBox = h("section", { class: "card wide", id: "decisions", "aria-labelledby": "decisions-h", tabindex: "-1" },
    h("h2", { id: "decisions-h" }, "Decisions waiting"),
    table("The decisions queue, most urgent first", [
      { title: "Priority", cell: (d) => badge(label(d.priority, "DECISION_PRIORITY_"), PRIORITY_KIND[d.priority]) },
      { title: "Decision", cell: (d) => d.summary },
      { title: "Kind", cell: (d) => `${label(d.decision_type, "DECISION_TYPE_")} · ${label(d.source_domain, "DECISION_SOURCE_")}` },
      { title: "Entity", cell: (d) => `${label(d.entity_type, "AUDIT_ENTITY_TYPE_")} ${d.entity_id}` },
      { title: "Since", cell: (d) => timeEl(d.created_at) },
      { title: "Evidence", cell: (d) => evidenceLink(d.entity_type, d.entity_id) },
    ], decisionRows, "No decisions are waiting."),
    pager("/overview", query, decisions, "decisions", "decisions_token"));

  const until = query.get("costs_until") || "";
  const untilInput = h("input", { id: "costs-until", type: "date", value: until.slice(0, 10) });
  costBox.append(h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    window.location.hash = hashFor("/overview", { costs_until: untilInput.value ? `${untilInput.value}T00:00:00Z` : "" });
  } }, h("div", { class: "field" }, h("label", { for: "costs-until" }, "History up to (UTC day)"), untilInput),
  h("div", { class: "field actions" }, h("button", { type: "submit" }, "Show"), link("#/overview", "Today"))));
  const page = h("section", { class: "page" }, h("h1", {}, "Overview"),
    h("p", { class: "lede" }, "What needs attention right now."),
    h("div", { class: "grid" }, pulseBox, counts, costBox, decisionBox));
  page.addEventListener("click", (event) => {
    const jump = event.target.closest("[data-jump]");
    if (jump) {
      event.preventDefault();
      const target = document.getElementById(jump.dataset.jump);
      target.scrollIntoView();
      target.focus();
    }
  });
  costHistory(page.querySelector("#cost-chart"), query.get("costs_until"));
  return page;
}

// Cost over time per budget scope against its budget: GetBudgetHistory (one call) gives each
// budget's spend per day, its usage of the reset window each day falls in, and that day's
// OK/NEAR/BREACHED state — the server's, by the rule GetCosts applies.
async function costHistory(box, until) {
  const cents = (m) => Number((m || {}).amount_cents || 0) / 100;
  try {
    const reply = await api("/api/v1/runtime/overview/costs/history", { days: 14, until });
    const currency = reply.currency || "";
    const first = (reply.budgets[0] || { days: [] }).days;
    const tenantDays = (reply.tenant_daily_spend || []);
    const period = reply.period || {};
    const xsOf = (days) => days.map((d) => Date.parse(d.day) / 1000);
    const start = Date.parse(period.start) / 1000;
    const xs = first.length ? xsOf(first) : tenantDays.map((_, i) => start + i * 86400);
    const lastDay = new Date(Date.parse(period.end) - 86400000).toISOString().slice(0, 10);
    const charts = [chart(`LLM spend per day, tenant-wide, ${currency} (${when(period.start).slice(0, 10)} to ${lastDay})`,
      xs, [{ label: "spend", values: tenantDays.map(cents), bars: true }])];
    for (const bh of reply.budgets || []) {
      const b = bh.budget || {};
      const days = bh.days || [];
      const limit = cents(b.max_value);
      const mark = (status) => days.map((d) => (d.status === status ? cents(d.window_used) : null));
      const scope = `${label(b.scope, "LIMIT_SCOPE_")} ${b.scope_id || ""}`.trim();
      const marks = days.filter((d) => d.status === "BUDGET_STATUS_NEAR_THRESHOLD" || d.status === "BUDGET_STATUS_BREACHED");
      charts.push(h("section", { class: "budget-history", "data-limit-id": b.limit_id },
        chart(`${b.name || b.limit_id}: ${scope}, resets ${label(b.reset_period, "RESET_PERIOD_")}, limit ${money(b.max_value)}`,
          xsOf(days), [
            { label: "spent that day", values: days.map((d) => cents(d.spent)), bars: true },
            { label: "used in the window", values: days.map((d) => cents(d.window_used)), color: "#8e44ad" },
            { label: "budget", values: days.map(() => limit), dash: [6, 4], color: "#4a4a55" },
            { label: "NEAR", values: mark("BUDGET_STATUS_NEAR_THRESHOLD"), points: true, color: "#c77800" },
            { label: "BREACHED", values: mark("BUDGET_STATUS_BREACHED"), points: true, color: "#a4161a" },
          ]),
        marks.length ? h("ul", { class: "budget-marks", "aria-label": `${b.name}: days at NEAR or BREACHED` }, marks.map((d) => h("li", {},
          `${String(d.day).slice(0, 10)} `, badge(BUDGET_WORD[d.status], BUDGET_KIND[d.status]),
          ` ${money(d.window_used)} of ${money(b.max_value)} (${(Number(d.utilization_bp || 0) / 100).toFixed(1)}%)`)))
          : h("p", { class: "help budget-marks-none" }, "No day at NEAR or BREACHED in this range."),
        h("details", {}, h("summary", {}, `${b.name}: the days as a table`), table(`${b.name} per day`, [
          { title: "Day", cell: (d) => String(d.day).slice(0, 10) },
          { title: "Spent", cell: (d) => money(d.spent) },
          { title: "Used in the window", cell: (d) => money(d.window_used) },
          { title: "Window from", cell: (d) => ((d.window || {}).start ? when(d.window.start).slice(0, 10) : "all time") },
          { title: "State", cell: (d) => badge(BUDGET_WORD[d.status] || label(d.status, "BUDGET_STATUS_"), BUDGET_KIND[d.status]) },
        ], days))));
    }
    if (!(reply.budgets || []).length) charts.push(h("p", { class: "empty" }, "No budgets are defined."));
    box.replaceChildren(...charts);
  } catch (err) {
    box.replaceChildren(h("p", { class: "warn" }, `Cost history unavailable: ${err.message}`));
  }
}

// ---------------------------------------------------------------- LLM runs

async function runsPage(query) {
  const reply = await api("/api/v1/logs/llm-runs", listQuery(query));
  const runs = reply.runs || [];
  return h("section", { class: "page" }, h("h1", {}, "LLM runs"),
    filterForm("/runs", query, [
      { name: "status", title: "Status", options: enumValues("LlmRunStatus"), prefix: "LLM_RUN_STATUS_" },
      { name: "has_violation", title: "Violation", options: ["true", "false"] },
      { name: "provider", title: "Provider" },
      { name: "model", title: "Model" },
      { name: "agent_id", title: "Agent" },
      { name: "policy_id", title: "Policy" },
      { name: "created_after", title: "From", date: true },
      { name: "created_before", title: "Until", date: true },
      ...orderFields("LlmRunSortField", "LLM_RUN_SORT_FIELD_"),
    ]),
    table(orderCaption("LLM runs", query, "LLM_RUN_SORT_FIELD_"), [
      { title: "Run", cell: (r) => link(`#/runs/${enc(r.run_id)}/envelope`, r.run_id) },
      { title: "Status", cell: (r) => label(r.status, "LLM_RUN_STATUS_") },
      { title: "Outcome", cell: (r) => label(r.outcome, "RUN_OUTCOME_") },
      { title: "Model", cell: (r) => `${r.provider} / ${r.model}` },
      { title: "Cost", cell: (r) => money(r.cost) },
      { title: "Started", cell: (r) => timeEl(r.started_at) },
      { title: "Policy", cell: (r) => (r.has_violation ? badge(`violation ${r.violation_policy_id || ""}`.trim(), "bad") : "—") },
    ], runs, "No runs match."),
    pager("/runs", query, reply, "runs"));
}

const RUN_TABS = [
  ["envelope", "O1 Envelope"], ["trace", "O2 Trace"], ["governance", "O3 Governance"],
  ["replay", "O4 Replay"], ["exports", "O5 Exports"],
];

function tabs(base, current, list) {
  return h("nav", { class: "tabs", "aria-label": "Depth" }, h("ul", {}, list.map(([key, text]) => h("li", {},
    link(`${base}/${key}`, text, { "aria-current": key === current ? "page" : null })))));
}

function dl(pairs) {
  return h("dl", { class: "fields" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

async function runPage(runId, tab, query) {
  const base = `#/runs/${enc(runId)}`;
  const envelope = await api(`/api/v1/logs/llm-runs/${enc(runId)}/envelope`); // 404 → the same not-found page
  const run = envelope.run || {};
  const body = await ({
    envelope: () => runEnvelope(run),
    trace: () => runTrace(runId),
    governance: () => runGovernance(runId),
    replay: () => runReplay(runId, query),
    exports: () => runExports(runId),
  }[tab] || (() => { throw new ApiError(404, {}); }))();
  return h("section", { class: "page" },
    h("p", { class: "crumbs" }, link("#/runs", "LLM runs"), " / ", runId),
    h("h1", {}, `Run ${runId}`),
    h("p", { class: "lede" }, `${label(run.status, "LLM_RUN_STATUS_")} · ${label(run.outcome, "RUN_OUTCOME_")} · `,
      run.has_violation ? badge(`policy violation ${run.violation_policy_id || ""}`.trim(), "bad") : "no violation"),
    tabs(base, tab, RUN_TABS),
    h("div", { class: "tabpanel" }, body));
}

function runEnvelope(run) {
  return [h("h2", {}, "O1 Envelope: what the run was"), dl([
    ["Run", run.run_id], ["Trace", run.trace_id || "—"], ["Agent", run.agent_id || "—"], ["Project", run.project_id || "—"],
    ["Provider / model", `${run.provider} / ${run.model}`], ["Status", label(run.status, "LLM_RUN_STATUS_")],
    ["Executor", label(run.executor_type, "EXECUTOR_TYPE_")], ["Outcome", label(run.outcome, "RUN_OUTCOME_")],
    ["Termination", run.termination_reason || "—"], ["Tokens in / out", `${run.input_tokens} / ${run.output_tokens}`],
    ["Cost", money(run.cost)], ["Started", timeEl(run.started_at)], ["Completed", timeEl(run.completed_at)],
    ["Violation", run.has_violation ? `yes — policy ${run.violation_policy_id || "?"}` : "no"],
    ["Synthetic", run.is_synthetic ? `yes (${run.synthetic_scenario_id || ""})` : "no"], ["Source", run.source || "—"],
  ])];
}

// A step's (or record's) erased payload field as a line of its own, in place of its block.
function erasedLine(title, record, field) {
  const gone = payloadGone(record, field);
  return gone ? h("p", { class: "payload-line" }, h("strong", {}, `${title}: `), gone) : null;
}

function jsonBlock(title, value) {
  if (value === undefined || value === null) return null;
  return h("details", {}, h("summary", {}, title), h("pre", {}, json(value)));
}

async function runTrace(runId) {
  const reply = await api(`/api/v1/logs/llm-runs/${enc(runId)}/trace`);
  const trace = reply.trace || {};
  const violationStep = trace.violation_step_index;
  const hasViolation = violationStep !== undefined && violationStep !== null;
  const steps = (reply.steps || []).map((s) => {
    const isViolation = hasViolation && Number(s.step_index) === Number(violationStep);
    return h("li", { class: `step${isViolation ? " step-violation" : ""}${s.is_inflection_point ? " step-inflection" : ""}`,
      id: `step-${s.step_index}`, tabindex: "-1", "aria-label": isViolation ? `Step ${s.step_index}: policy violation` : null },
    h("div", { class: "step-head" }, h("span", { class: "step-index" }, `#${s.step_index}`), " ",
      h("strong", {}, label(s.step_type, "STEP_TYPE_")), " ", label(s.level, "STEP_LEVEL_"), " · ", s.source || "", " · ",
      timeEl(s.timestamp),
      isViolation ? [" ", badge("VIOLATION", "bad")] : null,
      s.is_inflection_point && !isViolation ? [" ", badge("inflection point", "warn")] : null),
    h("div", { class: "help" }, `${s.tokens} tokens · ${(Number(s.cost_cents || 0) / 100).toFixed(2)} · ${s.duration_ms} ms · hash `,
      h("code", { class: "hash", title: s.content_hash }, s.content_hash || "—")),
    erasedLine("Input", s, "input_data") || jsonBlock("Input", s.input_data),
    erasedLine("Output", s, "output_data") || jsonBlock("Output", s.output_data), jsonBlock("Metadata", s.metadata));
  });
  return [h("h2", {}, "O2 Trace: what the run did"),
    hasViolation ? h("p", { class: "callout bad", role: "note" }, "Policy ", h("strong", {}, trace.violation_policy_id || "?"),
      ` broke at step #${violationStep}: ${trace.violation_reason || ""}`, " · ", h("button", { type: "button", class: "linklike", id: "goto-violation", onclick: () => {
        const step = document.getElementById(`step-${violationStep}`);
        step.scrollIntoView();
        step.focus();
      } }, "go to the step"),
      trace.incident_id ? [" · incident ", link(hashFor("/exports", { incident_id: trace.incident_id }), trace.incident_id)] : null) : h("p", {}, "No policy violation in this trace."),
    dl([["Trace", trace.trace_id], ["Status", label(trace.status, "TRACE_STATUS_")], ["Steps", String(reply.total_steps)],
      ["Tokens", String(reply.total_tokens)], ["Duration", `${reply.total_duration_ms} ms`], ["Cost", money(trace.total_cost)],
      ["Content hash", h("code", { class: "hash" }, trace.content_hash || "—")],
      ["Policy snapshot", trace.policy_snapshot_id || "—"]]),
    h("ol", { class: "timeline", "aria-label": "Trace steps in order" }, steps)];
}

function auditTable(caption, entries, empty) {
  return table(caption, [
    { title: "Seq", cell: (e) => link(`#/audit/${enc(e.id)}`, String(e.seq)) },
    { title: "Event", cell: (e) => label(e.event_type, "AUDIT_EVENT_TYPE_") },
    { title: "Entity", cell: (e) => `${label(e.entity_type, "AUDIT_ENTITY_TYPE_")} ${e.entity_id}` },
    { title: "Actor", cell: (e) => `${label(e.actor_type, "ACTOR_TYPE_")} ${e.actor_id || ""}` },
    { title: "Reason", cell: (e) => payloadOr(e, "action_reason", e.action_reason || "—") },
    { title: "When", cell: (e) => timeEl(e.created_at) },
  ], entries, empty);
}

async function runGovernance(runId) {
  const g = await api(`/api/v1/logs/llm-runs/${enc(runId)}/governance`);
  return [h("h2", {}, "O3 Governance: where it met policy"),
    h("h3", {}, "Policy steps"),
    table("Policy-check and violation steps", [
      { title: "Step", cell: (s) => link(`#/runs/${enc(runId)}/trace`, `#${s.step_index}`) },
      { title: "Type", cell: (s) => label(s.step_type, "STEP_TYPE_") },
      { title: "Level", cell: (s) => label(s.level, "STEP_LEVEL_") },
      { title: "Source", cell: (s) => s.source },
      { title: "Hash", cell: (s) => h("code", { class: "hash" }, short(s.content_hash)) },
    ], g.policy_steps || [], "No policy steps."),
    h("h3", {}, "Limit breaches"),
    table("Limit breaches of this run", [
      { title: "Breach", cell: (b) => b.id },
      { title: "Limit", cell: (b) => b.limit_id },
      { title: "Type", cell: (b) => label(b.breach_type, "BREACH_TYPE_") },
      { title: "Value / limit", cell: (b) => `${b.value_at_breach} / ${b.limit_value}` },
      { title: "When", cell: (b) => timeEl(b.breached_at) },
    ], g.limit_breaches || [], "No limit breaches."),
    h("h3", {}, "Audit entries"), auditTable("Audit entries correlated with this run", g.audit_entries || [], "No audit entries."),
    h("h3", {}, "Overrides"), auditTable("Overrides", g.overrides || [], "No overrides.")];
}

function replayEventText(e) {
  if (e.step) return `step #${e.step.step_index} ${label(e.step.step_type, "STEP_TYPE_")} (${e.step.source || ""})`;
  if (e.system_record) return [`${e.system_record.component}: `, payloadOr(e.system_record, "summary", e.system_record.summary)];
  if (e.audit_entry) return `${label(e.audit_entry.event_type, "AUDIT_EVENT_TYPE_")} ${e.audit_entry.entity_id}`;
  if (e.limit_breach) return `limit ${e.limit_breach.limit_id} breached: ${e.limit_breach.value_at_breach} / ${e.limit_breach.limit_value}`;
  return "—";
}

function replayView(replay) {
  const r = replay || {};
  return [dl([["Centred on", `${label(r.center, "REPLAY_CENTER_")} at ${when(r.center_timestamp)}`],
    ["Window", h("span", {}, timeEl(r.window_start), " → ", timeEl(r.window_end), ` (±${r.window_seconds} s)`)]]),
  table("Events in the window, in time order", [
    { title: "When", cell: (e) => timeEl(e.occurred_at) },
    { title: "Kind", cell: (e) => label(e.kind, "REPLAY_EVENT_KIND_") },
    { title: "What", cell: (e) => replayEventText(e) },
  ], r.events || [], "No events in the window.")];
}

async function runReplay(runId, query) {
  const seconds = query.get("window_seconds") || "";
  const reply = await api(`/api/v1/logs/llm-runs/${enc(runId)}/replay`, { window_seconds: seconds });
  const input = h("input", { id: "window", type: "number", min: "1", value: seconds || String((reply.replay || {}).window_seconds || "") });
  return [h("h2", {}, "O4 Replay: what surrounded the inflection point"),
    h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); window.location.hash = hashFor(`/runs/${enc(runId)}/replay`, { window_seconds: input.value }); } },
      h("div", { class: "field" }, h("label", { for: "window" }, "Window (seconds either side)"), input),
      h("div", { class: "field actions" }, h("button", { type: "submit" }, "Replay"))),
    replayView(reply.replay)];
}

async function runExports(runId) {
  const reply = await api(`/api/v1/logs/llm-runs/${enc(runId)}/export`);
  return [h("h2", {}, "O5 Exports: the evidence bundles that carry this run"),
    exportTable(reply.exports || []),
    exportForm({ run_id: runId }, `run ${runId}`)];
}

// ---------------------------------------------------------------- System records

async function systemPage(query) {
  const [reply, attribution] = await Promise.all([
    api("/api/v1/logs/system", listQuery(query)),
    // The same window as the list's filter (the API's default: the last 24 hours).
    api("/api/v1/logs/system/audit", { page_size: 50, created_after: query.get("created_after"), created_before: query.get("created_before") }),
  ]);
  const slice = {};
  for (const k of ["component", "event_type", "severity", "created_after", "created_before"]) if (query.get(k)) slice[k] = query.get(k);
  return h("section", { class: "page" }, h("h1", {}, "System records"),
    filterForm("/system", query, [
      { name: "component", title: "Component" },
      { name: "event_type", title: "Event", options: enumValues("SystemEventType"), prefix: "SYSTEM_EVENT_TYPE_" },
      { name: "severity", title: "Severity", options: enumValues("SystemSeverity"), prefix: "SYSTEM_SEVERITY_" },
      { name: "created_after", title: "From", date: true },
      { name: "created_before", title: "Until", date: true },
      ...orderFields("SystemRecordSortField", "SYSTEM_RECORD_SORT_FIELD_"),
    ]),
    table(orderCaption("Platform events", query, "SYSTEM_RECORD_SORT_FIELD_"), [
      { title: "When", cell: (r) => timeEl(r.created_at) },
      { title: "Component", cell: (r) => r.component },
      { title: "Event", cell: (r) => label(r.event_type, "SYSTEM_EVENT_TYPE_") },
      { title: "Severity", cell: (r) => label(r.severity, "SYSTEM_SEVERITY_") },
      { title: "Summary", cell: (r) => payloadOr(r, "summary", r.summary) },
      { title: "Run", cell: (r) => (r.run_id ? link(`#/system/${enc(r.run_id)}/snapshot`, r.run_id) : "—") },
    ], reply.records || [], "No records match."),
    pager("/system", query, reply, "records"),
    h("h2", {}, "O5 Who caused them"),
    table(`Platform events by cause, ${when(attribution.window_start)} → ${when(attribution.window_end)}`, [
      { title: "Caused by", cell: (r) => label(r.caused_by, "CAUSED_BY_") },
      { title: "Component", cell: (r) => r.component },
      { title: "Event", cell: (r) => label(r.event_type, "SYSTEM_EVENT_TYPE_") },
      { title: "Count", cell: (r) => String(r.count) },
      { title: "Actors", cell: (r) => (r.actor_ids || []).join(", ") || "—" },
    ], attribution.rows || [], "No platform events in the window."),
    exportOrNote(query, exportForm({ system_slice: slice }, "this filtered list of system records")));
}

const SYSTEM_TABS = [["snapshot", "O1 Snapshot"], ["telemetry", "O2 Telemetry"], ["events", "O3 Events"], ["replay", "O4 Replay"]];

async function systemRunPage(runId, tab) {
  const path = `/api/v1/logs/system/${enc(runId)}`;
  let body;
  if (tab === "snapshot") {
    const s = await api(`${path}/snapshot`);
    const b = s.baseline || {};
    body = [h("h2", {}, "O1 Environment baseline"), dl([["Basis", label(s.basis, "SNAPSHOT_BASIS_")],
      ["Record", h("span", {}, `${b.component}: `, payloadOr(b, "summary", b.summary))], ["When", timeEl(b.created_at)],
      ["Content hash", h("code", { class: "hash" }, b.content_hash || "—")]]),
    erasedLine("Details", b, "details") || jsonBlock("Details", b.details)];
  } else if (tab === "telemetry") {
    const t = await api(`${path}/telemetry`);
    body = [h("h2", {}, "O2 Telemetry"),
      h("p", { class: "callout warn", role: "note" }, badge(label(t.status, "TELEMETRY_STATUS_"), "warn"), " ", t.reason),
      dl([["What is available instead", (t.available_data || []).join(", ") || "—"], ["System records about the run", String(t.run_event_count)]])];
  } else if (tab === "events") {
    const e = await api(`${path}/events`, { page_size: 100 });
    body = [h("h2", {}, "O3 System records about the run"), table("Records", [
      { title: "When", cell: (r) => timeEl(r.created_at) }, { title: "Component", cell: (r) => r.component },
      { title: "Summary", cell: (r) => payloadOr(r, "summary", r.summary) }, { title: "Hash", cell: (r) => h("code", { class: "hash" }, short(r.content_hash)) },
    ], e.records || [], "No records.")];
  } else if (tab === "replay") {
    const r = await api(`${path}/replay`);
    body = [h("h2", {}, "O4 Infrastructure replay"), replayView(r.replay)];
  } else {
    throw new ApiError(404, {});
  }
  return h("section", { class: "page" }, h("p", { class: "crumbs" }, link("#/system", "System records"), " / ", runId),
    h("h1", {}, `System view of run ${runId}`), tabs(`#/system/${enc(runId)}`, tab, SYSTEM_TABS),
    h("div", { class: "tabpanel" }, body), h("p", {}, link(`#/runs/${enc(runId)}/envelope`, "The run itself")));
}

// ---------------------------------------------------------------- Audit ledger


async function auditPage(query) {
  const reply = await api("/api/v1/logs/audit", listQuery(query));
  const slice = {};
  for (const k of ["event_type", "entity_type", "actor_type", "actor_id", "correlation_id", "created_after", "created_before"]) {
    if (query.get(k)) slice[k] = query.get(k);
  }
  return h("section", { class: "page" }, h("h1", {}, "Audit ledger"),
    h("p", { class: "lede" }, "Append-only and hash-chained. ", link("#/integrity", "Check its integrity")),
    filterForm("/audit", query, [
      { name: "event_type", title: "Event", options: enumValues("AuditEventType"), prefix: "AUDIT_EVENT_TYPE_" },
      { name: "entity_type", title: "Entity", options: enumValues("AuditEntityType"), prefix: "AUDIT_ENTITY_TYPE_" },
      { name: "actor_type", title: "Actor type", options: enumValues("ActorType"), prefix: "ACTOR_TYPE_" },
      { name: "actor_id", title: "Actor" },
      { name: "correlation_id", title: "Correlation" },
      { name: "created_after", title: "From", date: true },
      { name: "created_before", title: "Until", date: true },
      ...orderFields("AuditSortField", "AUDIT_SORT_FIELD_"),
    ]),
    auditTable(orderCaption("Ledger entries", query, "AUDIT_SORT_FIELD_"), reply.entries || [], "No entries match."),
    pager("/audit", query, reply, "entries"),
    exportOrNote(query, exportForm({ audit_slice: slice }, "this filtered list of ledger entries")));
}

// Both states flattened to dotted paths; each path's before and after side by side.
function flatten(value, prefix, out) {
  if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else if (prefix) {
    out[prefix] = JSON.stringify(value);
  }
  return out;
}

function stateDiff(before, after) {
  const a = flatten(before || {}, "", {});
  const b = flatten(after || {}, "", {});
  const keys = Array.from(new Set([...Object.keys(a), ...Object.keys(b)])).sort();
  const rows = keys.map((k) => {
    const kind = !(k in a) ? "added" : !(k in b) ? "removed" : a[k] === b[k] ? "same" : "changed";
    return { key: k, before: a[k], after: b[k], kind, __class: `diff-${kind}` };
  });
  return table("Before and after", [
    { title: "Field", cell: (r) => r.key },
    { title: "Before", cell: (r) => (r.before === undefined ? "—" : h("code", {}, r.before)) },
    { title: "After", cell: (r) => (r.after === undefined ? "—" : h("code", {}, r.after)) },
    { title: "Change", cell: (r) => badge(r.kind, { added: "ok", removed: "bad", changed: "warn" }[r.kind]) },
  ], rows, "This entry records no state.");
}

async function auditEntryPage(entryId) {
  const reply = await api(`/api/v1/logs/audit/${enc(entryId)}`);
  const e = reply.entry || {};
  return h("section", { class: "page" }, h("p", { class: "crumbs" }, link("#/audit", "Audit ledger"), " / ", `#${e.seq}`),
    h("h1", {}, `Ledger entry #${e.seq}: ${label(e.event_type, "AUDIT_EVENT_TYPE_")}`),
    dl([["Entity", `${label(e.entity_type, "AUDIT_ENTITY_TYPE_")} ${e.entity_id}`],
      ["Actor", `${label(e.actor_type, "ACTOR_TYPE_")} ${e.actor_id || ""}`], ["Reason", payloadOr(e, "action_reason", e.action_reason || "—")],
      ["Correlation", e.correlation_id ? link(`#/runs/${enc(e.correlation_id.includes(".") ? e.correlation_id
        : `${(reply.metadata || e.metadata || {}).tenant_id || ""}.${e.correlation_id}`)}/envelope`, e.correlation_id) : "—"],
      ["When", timeEl(e.created_at)], ["Content hash", h("code", { class: "hash" }, e.content_hash)],
      ["Previous hash", h("code", { class: "hash" }, e.prev_hash)], ["Chain hash", h("code", { class: "hash" }, e.chain_hash)]]),
    h("h2", {}, "What changed"), erasedLine("Before", e, "before_state"), erasedLine("After", e, "after_state"),
    stateDiff(reply.before_state, reply.after_state),
    h("p", {}, link(hashFor("/integrity", { seq: e.seq }), "Prove this entry is in the ledger")));
}

// ---------------------------------------------------------------- Integrity (chain, checkpoint, inclusion proof)

async function sha256(...parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const joined = new Uint8Array(size);
  let at = 0;
  for (const p of parts) { joined.set(p, at); at += p.length; }
  return new Uint8Array(await window.crypto.subtle.digest("SHA-256", joined));
}

const LEAF = Uint8Array.of(0);
const NODE = Uint8Array.of(1);

// RFC 9162 §2.1.3.2: the root an inclusion proof implies for (leaf index, tree size).
async function rootFromInclusionProof(leafIndex, treeSize, leafHash, path) {
  if (leafIndex >= treeSize) throw new Error("leaf index beyond the tree");
  let fn = leafIndex;
  let sn = treeSize - 1;
  let r = leafHash;
  for (const p of path) {
    if (sn === 0) throw new Error("the proof is longer than the tree allows");
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(NODE, p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await sha256(NODE, r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Error("the proof is shorter than the tree needs");
  return r;
}

async function verifyInclusion(proof, trustedRoot) {
  const leafData = b64ToBytes(proof.leaf_data);
  const leafHash = await sha256(LEAF, leafData);
  const checks = [];
  checks.push(["leaf hash = SHA-256(0x00 ‖ leaf data)", hex(leafHash) === hex(b64ToBytes(proof.leaf_hash))]);
  let root = null;
  try {
    root = await rootFromInclusionProof(Number(proof.leaf_index), Number(proof.tree_size), leafHash,
      (proof.audit_path || []).map(b64ToBytes));
    checks.push(["audit path leads to the proof's root", hex(root) === hex(b64ToBytes(proof.root_hash))]);
  } catch (err) {
    checks.push([`audit path: ${err.message}`, false]);
  }
  if (trustedRoot) checks.push(["root = the signed checkpoint's root", root !== null && hex(root) === hex(trustedRoot)]);
  return { ok: checks.every(([, passed]) => passed), checks, root };
}

// C2SP signed-note (https://c2sp.org/signed-note) checked here against the verifier key the
// person pins (`<name>+<hex key id>+base64(0x01 ‖ Ed25519 public key)`, Go sumdb/note's form):
// WebCrypto Ed25519. As the signed-note rules say: signatures of other keys (the witnesses'
// cosignatures) are ignored, the pinned key's signature must verify, and it may sign once.
const PIN_KEY = "aos.pinned-log-key";
const utf8 = (text) => new TextEncoder().encode(text);

async function verifyNote(note, vkey) {
  const checks = [];
  const fail = (name) => { checks.push([name, false]); return { ok: false, checks }; };
  // Cut at the first two '+' only (as Go's note.NewVerifier does): the base64 key may hold '+'.
  const text0 = String(vkey || "").trim();
  const plus1 = text0.indexOf("+");
  const plus2 = plus1 < 0 ? -1 : text0.indexOf("+", plus1 + 1);
  if (plus1 <= 0 || plus2 < 0) return fail("the pinned key is name+keyid+key");
  const [name, idHex, keyB64] = [text0.slice(0, plus1), text0.slice(plus1 + 1, plus2), text0.slice(plus2 + 1)];
  let keyBytes;
  try { keyBytes = b64ToBytes(keyB64); } catch (e) { return fail("the pinned key's base64 decodes"); }
  if (keyBytes.length !== 33 || keyBytes[0] !== 1) return fail("the pinned key is an Ed25519 note key (0x01 ‖ 32 bytes)");
  const id = (await sha256(utf8(`${name}\n`), keyBytes)).slice(0, 4);
  if (hex(id) !== idHex.toLowerCase()) return fail("key id = SHA-256(name ‖ \\n ‖ 0x01 ‖ key)[:4]");
  checks.push(["the pinned key is well-formed (its id matches)", true]);
  const cut = note.lastIndexOf("\n\n");
  if (cut < 0 || !note.endsWith("\n")) return fail("the note is text, a blank line, signature lines");
  const text = note.slice(0, cut + 1);
  const lines = note.slice(cut + 2, -1).split("\n");
  let key;
  try {
    key = await window.crypto.subtle.importKey("raw", keyBytes.slice(1), { name: "Ed25519" }, false, ["verify"]);
  } catch (err) {
    return { ok: false, unsupported: true, checks: [[`this browser cannot check Ed25519 (${err.name}); use \`aos-evidence ledger verify\``, false]] };
  }
  let signed = 0;
  for (const line of lines) {
    if (!line.startsWith("— ")) return fail("every signature line starts with an em dash");
    const [signer, b64] = line.slice(2).split(" ", 2);
    let sig;
    try { sig = b64ToBytes(b64); } catch (e) { return fail("signature lines are base64"); }
    if (signer !== name || sig.length < 4 || hex(sig.slice(0, 4)) !== hex(id)) continue; // another key's
    signed += 1;
    const valid = sig.length === 68 && await window.crypto.subtle.verify({ name: "Ed25519" }, key, sig.slice(4), utf8(text));
    if (!valid) return fail(`Ed25519 signature by ${name} over the note text`);
  }
  if (signed !== 1) return fail(signed ? "the pinned key signs once" : `a signature by the pinned key (${name})`);
  checks.push([`Ed25519 signature by ${name} over the note text`, true]);
  const [origin, size, root] = text.split("\n");
  checks.push(["the checkpoint's origin is the key's name", origin === name]);
  let rootBytes = new Uint8Array();
  try { rootBytes = b64ToBytes(root); } catch (e) { /* checked below */ }
  const sizeOk = /^[0-9]+$/.test(size || "") && rootBytes.length === 32;
  checks.push(["the note is a tlog-checkpoint (origin, tree size, 32-byte root)", sizeOk]);
  return { ok: checks.every(([, passed]) => passed), checks, origin, treeSize: Number(size), root: rootBytes };
}

async function integrityPage(parts, query) {
  const [report, checkpoint] = await Promise.all([
    api("/api/v1/logs/audit/integrity"),
    api("/api/v1/logs/audit/checkpoint").catch((err) => ({ error: err })),
  ]);
  const head = report.head || {};
  const cp = checkpoint.checkpoint || {};
  const logCp = checkpoint.log_checkpoint || {};
  const statusKind = { INTEGRITY_STATUS_VERIFIED: "ok", INTEGRITY_STATUS_BROKEN: "bad" }[report.status] || "warn";
  const proofOut = h("div", { id: "proof-result", "aria-live": "polite" });
  const noteOut = h("div", { id: "note-result", "aria-live": "polite" });
  const input = h("input", { id: "proof-seq", type: "number", min: "1", value: query.get("seq") || String(head.seq || "") });
  const pinInput = h("input", { id: "pin-key", type: "text", class: "wide-input", autocomplete: "off", spellcheck: "false",
    value: window.localStorage.getItem(PIN_KEY) || "", "aria-describedby": "pin-help" });
  // The checkpoint the pinned key verified in this page: the only root a proof is held against.
  let trusted = null;
  let noteChecked = Promise.resolve();
  const checkNote = async () => {
    trusted = null;
    const vkey = pinInput.value.trim();
    if (!vkey) {
      noteOut.replaceChildren(h("p", { class: "callout warn", id: "note-verdict" }, "NOT CHECKED — pin the log's verifier key to check the checkpoint's signature here."));
      return;
    }
    window.localStorage.setItem(PIN_KEY, vkey);
    if (!logCp.signed_note) {
      noteOut.replaceChildren(h("p", { class: "callout warn", id: "note-verdict" }, "No signed checkpoint to check."));
      return;
    }
    const result = await verifyNote(logCp.signed_note, vkey);
    if (result.ok) trusted = { treeSize: result.treeSize, root: result.root };
    noteOut.replaceChildren(
      h("p", { class: `callout ${result.ok ? "ok" : result.unsupported ? "warn" : "bad"}`, id: "note-verdict" },
        result.ok ? `VALID — signed by ${result.origin}, tree size ${result.treeSize}` : result.unsupported ? "NOT CHECKED" : "INVALID",
        result.ok ? "" : " — inclusion proofs are not held against this checkpoint"),
      h("ul", { class: "checks" }, result.checks.map(([name, passed]) => h("li", {}, badge(passed ? "pass" : "fail", passed ? "ok" : "bad"), " ", name))));
    announce(result.ok ? "Checkpoint signature valid" : "Checkpoint signature not valid");
  };
  const prove = async () => {
    proofOut.replaceChildren(h("p", { class: "loading" }, "Fetching the proof…"));
    try {
      await noteChecked;
      const q = { seq: input.value };
      const against = trusted && trusted.treeSize >= Number(input.value) ? trusted : null;
      if (against) q.tree_size = String(against.treeSize);
      const proof = await api("/api/v1/logs/audit/proofs/inclusion", q);
      const result = await verifyInclusion(proof, against ? against.root : null);
      const verdict = !result.ok ? "NOT VERIFIED"
        : against ? "VERIFIED in this browser against the signed checkpoint"
          : "CONSISTENT with the proof's own root only — NOT held against a verified checkpoint";
      proofOut.replaceChildren(
        h("p", { class: `callout ${result.ok ? (against ? "ok" : "warn") : "bad"}`, id: "proof-verdict" }, verdict,
          ` — entry #${proof.seq} is leaf ${proof.leaf_index} of a tree of ${proof.tree_size}`),
        h("ul", { class: "checks" }, result.checks.map(([name, passed]) => h("li", {}, badge(passed ? "pass" : "fail", passed ? "ok" : "bad"), " ", name))),
        dl([["Root", h("code", { class: "hash" }, result.root ? hex(result.root) : "—")],
          ["Audit path", `${(proof.audit_path || []).length} hashes`],
          ["Entry", proof.entry_id ? link(`#/audit/${enc(proof.entry_id)}`, proof.entry_id) : "—"]]),
        h("p", { class: "help" }, "Hashes computed with WebCrypto SHA-256 (RFC 9162); the root is held against the checkpoint " +
          "whose Ed25519 signature this page verified with the key you pinned."));
      announce(result.ok ? "Inclusion proof verified" : "Inclusion proof failed");
    } catch (err) {
      proofOut.replaceChildren(h("p", { class: "callout bad", role: "alert" }, `No proof: ${err.message}`));
    }
  };
  const servedKey = logCp.log_verifier_key || "";
  const page = h("section", { class: "page" }, h("h1", {}, "Ledger integrity"),
    h("section", { class: "card" }, h("h2", {}, "Hash chain"),
      h("p", {}, badge(label(report.status, "INTEGRITY_STATUS_"), statusKind), ` ${report.entries_checked} entries checked (#${report.verified_from_seq}–#${report.verified_to_seq})`,
        report.has_more ? " — more remain beyond this report's page" : ""),
      dl([["Head", `#${head.seq} at ${when(head.created_at)}`], ["Head chain hash", h("code", { class: "hash" }, head.chain_hash || "—")],
        ["Checked at", timeEl(report.checked_at)]]),
      (report.anomalies || []).length ? table("Anomalies", [
        { title: "Seq", cell: (a) => String(a.seq) }, { title: "Kind", cell: (a) => label(a.kind, "ANOMALY_KIND_") },
        { title: "Detail", cell: (a) => a.detail }], report.anomalies) : h("p", {}, "No anomalies.")),
    h("section", { class: "card" }, h("h2", {}, "Latest checkpoint"),
      checkpoint.error ? h("p", { class: "warn" }, `No checkpoint: ${checkpoint.error.message}`) : dl([
        ["Chain checkpoint", `#${cp.seq} issued ${when(cp.issued_at)}`], ["Chain hash", h("code", { class: "hash" }, cp.chain_hash || "—")],
        ["Transparency log", `${logCp.origin || "—"} · tree size ${logCp.tree_size || "—"}`],
        ["Root hash", h("code", { class: "hash" }, logCp.root_hash ? hex(b64ToBytes(logCp.root_hash)) : "—")]]),
      logCp.signed_note ? h("details", {}, h("summary", {}, "Signed note"), h("pre", {}, logCp.signed_note)) : null),
    h("section", { class: "card" }, h("h2", {}, "Checkpoint signature"),
      h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); noteChecked = checkNote(); } },
        h("div", { class: "field grow" }, h("label", { for: "pin-key" }, "Pinned log verifier key"), pinInput),
        h("div", { class: "field actions" }, h("button", { type: "submit", id: "verify-note" }, "Check the signature here"))),
      h("p", { id: "pin-help", class: "help" }, "Paste the key your operator gave you out of band; it stays in this browser (localStorage). ",
        servedKey ? h("button", { type: "button", class: "linklike", id: "use-served-key", onclick: () => { pinInput.value = servedKey; } },
          "Fill in the key this gateway reports") : null,
        servedKey ? " (information, not trust: compare it with yours)." : null),
      noteOut),
    h("section", { class: "card" }, h("h2", {}, "Inclusion proof"),
      h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); prove(); } },
        h("div", { class: "field" }, h("label", { for: "proof-seq" }, "Ledger entry (seq)"), input),
        h("div", { class: "field actions" }, h("button", { type: "submit", id: "prove" }, "Prove and verify here"))),
      proofOut),
    h("div", { id: "ledger-growth" }));
  ledgerGrowth(page.querySelector("#ledger-growth"));
  noteChecked = checkNote();
  if (query.get("seq")) prove();
  return page;
}

// Ledger growth: how many entries the ledger holds about events up to each time (entries by
// their created_at, counted; the newest 1000 entries). created_at is the event's time, which
// producers may record late, so this is growth by event time, not by append order (seq).
async function ledgerGrowth(box) {
  try {
    const reply = await api("/api/v1/logs/audit", { page_size: 1000 });
    const times = (reply.entries || []).map((e) => Date.parse(e.created_at) / 1000).sort((a, b) => a - b);
    box.replaceChildren(chart("Ledger growth (entries by event time)", times, [{ label: "entries", values: times.map((_, i) => i + 1) }],
      reply.has_more ? "The newest 1000 entries, counted from the oldest of them." : "Every entry of the ledger, by its created_at."));
  } catch (err) {
    box.replaceChildren(h("p", { class: "warn" }, `Ledger growth unavailable: ${err.message}`));
  }
}

// ---------------------------------------------------------------- Exports


function exportTable(exports) {
  return table("Exports, newest first", [
    { title: "Export", cell: (x) => link(`#/exports/${enc(x.export_id)}`, x.export_id) },
    { title: "Scope", cell: (x) => `${label(x.scope, "EXPORT_SCOPE_")} ${x.run_id || x.incident_id || ""}` },
    { title: "Bundle", cell: (x) => `${label(x.bundle_type, "BUNDLE_TYPE_")} · ${label(x.format, "EXPORT_FORMAT_")}` },
    { title: "Size", cell: (x) => `${x.size_bytes} B` },
    { title: "Content", cell: (x) => x.content_erased
      ? h("span", { class: "export-erased" }, badge("ERASED", "warn"), ` (${erasuresText(x)})`) : "stored" },
    { title: "Created", cell: (x) => timeEl(x.created_at) },
  ], exports, "No exports yet.");
}

// An erased export's erasures, each with its basis (docs/ERASURE.md §3c): "recorded" (the export
// recorded carrying the subject's payloads) or "untracked" (it recorded nothing; treated as possibly
// carrying them). The ids alone when the answer names no basis.
function erasuresText(x) {
  const erasures = x.erasures || [];
  if (!erasures.length) return (x.erasure_ids || []).join(", ");
  return erasures.map((e) => `${e.erasure_id} ${e.basis ? label(e.basis, "ERASURE_BASIS_").toLowerCase() : "basis unknown"}`).join(", ");
}

function isUntracked(x) {
  return (x.erasures || []).some((e) => e.basis === "ERASURE_BASIS_UNTRACKED");
}

// Create an export of `subject` (run_id, incident_id, audit_slice or system_slice), then open it.
function exportForm(subject, what) {
  const bundle = h("select", { id: "x-bundle" }, enumValues("BundleType").map((b) => h("option", { value: b }, label(b, "BUNDLE_TYPE_"))));
  const format = h("select", { id: "x-format" }, enumValues("ExportFormat").map((f) => h("option", { value: f, selected: f === "EXPORT_FORMAT_ZIP" }, label(f, "EXPORT_FORMAT_"))));
  const out = h("div", { "aria-live": "polite" });
  const button = h("button", { type: "submit", id: "x-create" }, "Create export");
  return h("section", { class: "card export-form" }, h("h2", {}, `Export ${what}`),
    h("form", {
      class: "filters",
      onsubmit: async (event) => {
        event.preventDefault();
        button.disabled = true;
        // CreateExport answers once the export is complete (collected, signed, chained): the API
        // reports no progress in between, so the page says how long it has waited, nothing more.
        const waited = h("span", {}, "0 s");
        out.replaceChildren(h("p", { class: "loading", id: "x-progress" }, "Creating the export (collecting, signing, chaining) — waiting ",
          waited, ". The server answers when it is complete; it reports no progress before that."));
        const began = Date.now();
        const ticker = window.setInterval(() => { waited.textContent = `${Math.round((Date.now() - began) / 1000)} s`; }, 1000);
        try {
          const body = Object.assign({}, subject, { bundle_type: bundle.value, format: format.value });
          const reply = await call("/api/v1/logs/exports", { method: "POST", body }).finally(() => window.clearInterval(ticker));
          announce("Export created");
          window.location.hash = `#/exports/${enc(reply.export.export_id)}`;
        } catch (err) {
          out.replaceChildren(h("p", { class: "callout bad", role: "alert" }, `Not created: ${err.message}`));
          button.disabled = false;
        }
      },
    },
    h("div", { class: "field" }, h("label", { for: "x-bundle" }, "Bundle"), bundle),
    h("div", { class: "field" }, h("label", { for: "x-format" }, "Format"), format),
    h("div", { class: "field actions" }, button)), out);
}

async function exportsPage(query) {
  const q = listQuery(query);
  const reply = await api("/api/v1/logs/exports", q);
  const exports = reply.exports || [];
  const incident = query.get("incident_id");
  const history = await api("/api/v1/logs/exports", { page_size: 1000 });
  const perDay = new Map();
  for (const x of history.exports || []) {
    const day = dayStart(new Date(x.created_at)).getTime() / 1000;
    perDay.set(day, (perDay.get(day) || 0) + 1);
  }
  // Every day from the oldest export shown (at least the last 14 days) to today, zeros included.
  const today = dayStart(new Date()).getTime() / 1000;
  const oldest = Math.min(today - 13 * 86400, ...perDay.keys());
  const days = Array.from({ length: Math.round((today - oldest) / 86400) + 1 }, (_, i) => oldest + i * 86400);
  return h("section", { class: "page" }, h("h1", {}, "Exports"),
    h("p", { class: "lede" }, "Signed, chained evidence bundles: create one from a run (its O5 tab), an incident, or a filtered ",
      link("#/audit", "audit"), " or ", link("#/system", "system"), " list."),
    incident ? exportForm({ incident_id: incident }, `incident ${incident}`) : null,
    filterForm("/exports", query, [
      { name: "scope", title: "Scope", options: enumValues("ExportScope"), prefix: "EXPORT_SCOPE_" },
      { name: "run_id", title: "Run" },
      { name: "incident_id", title: "Incident" },
    ]),
    exportTable(exports),
    pager("/exports", query, reply, "exports"),
    chart("Export history (exports per day)", days, [{ label: "exports", values: days.map((d) => perDay.get(d) || 0), bars: true }],
      history.has_more ? "The newest 1000 exports." : null));
}

function saveFile(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function exportPage(exportId) {
  const reply = await api(`/api/v1/logs/exports/${enc(exportId)}`);
  const x = reply.export || {};
  const verifyOut = h("div", { id: "verify-result", "aria-live": "polite" });
  const recompute = h("input", { type: "checkbox", id: "recompute" });
  const download = async () => {
    const r = await call(`/api/v1/logs/exports/${enc(exportId)}:download`, { raw: true });
    saveFile(x.filename || `${exportId}.bin`, await r.blob());
    announce("Download started");
  };
  const verify = async () => {
    verifyOut.replaceChildren(h("p", { class: "loading" }, "Verifying…"));
    try {
      const v = await call(`/api/v1/logs/exports/${enc(exportId)}:verify`, { method: "POST", body: { recompute: recompute.checked } });
      verifyOut.replaceChildren(
        h("p", { class: `callout ${v.valid ? "ok" : "bad"}`, id: "verify-verdict" }, v.valid ? "VALID" : "INVALID",
          ` — verified ${when(v.verified_at)} by ${v.verifier_version}`, v.recorded ? ` (recorded in the ledger as #${v.audit_entry_seq})` : ""),
        table("The server's checks", [
          { title: "Check", cell: (c) => c.name }, { title: "Result", cell: (c) => badge(c.passed ? "pass" : "fail", c.passed ? "ok" : "bad") },
          { title: "Detail", cell: (c) => c.detail }], v.checks || []));
      announce(v.valid ? "Export valid" : "Export invalid");
    } catch (err) {
      verifyOut.replaceChildren(h("p", { class: "callout bad", role: "alert" }, `Not verified: ${err.message}`));
    }
  };
  const keys = await api("/api/v1/logs/exports/signing-keys");
  const signer = (keys.keys || []).find((k) => k.key_id === x.signing_key_id) || {};
  const file = x.filename || `${exportId}.bin`;
  const command = `python -m aos_recording.verify_export ${file} --envelope export.dsse.json --keys keys.json --key ${signer.public_key || "<the signing key's public key, from your operator>"}`;
  return h("section", { class: "page" }, h("p", { class: "crumbs" }, link("#/exports", "Exports"), " / ", exportId),
    h("h1", {}, `Export ${exportId}`),
    dl([["Scope", `${label(x.scope, "EXPORT_SCOPE_")} ${x.run_id || x.incident_id || x.slice_filter || ""}`],
      ["Bundle / format", `${label(x.bundle_type, "BUNDLE_TYPE_")} / ${label(x.format, "EXPORT_FORMAT_")}`],
      ["File", `${file} (${x.size_bytes} bytes, ${x.content_type})`], ["SHA-256", h("code", { class: "hash" }, x.checksum)],
      ["Created", h("span", {}, timeEl(x.created_at), ` by ${label(x.requested_by_type, "ACTOR_TYPE_")} ${x.requested_by_id}`)],
      ["Chain", h("span", {}, `#${x.seq} · `, h("code", { class: "hash" }, x.chain_hash))], ["Signed by key", x.signing_key_id],
      x.run_id ? ["Run", link(`#/runs/${enc(x.run_id)}/envelope`, x.run_id)] : null]),
    x.content_erased ? h("p", { class: "callout bad", id: "content-erased", role: "note" },
      h("strong", {}, "Content erased after export"),
      ` (${isUntracked(x) ? "up to " : ""}${x.payloads_erased || 0} payloads, erasure `,
      ((x.erasures || []).length ? x.erasures.map((e, i) => [i ? ", " : "", h("code", {}, e.erasure_id), " ",
        h("span", { class: "erasure-basis" }, e.basis ? label(e.basis, "ERASURE_BASIS_").toLowerCase() : "basis unknown")])
        : (x.erasure_ids || []).map((id, i) => [i ? ", " : "", h("code", {}, id)])),
      "): the stored artifact was deleted with them, so it cannot be downloaded. The signed manifest, the signature and the export's ",
      "place in the chain remain and verify; a copy downloaded before still matches the manifest's SHA-256.",
      isUntracked(x) ? [" ", h("span", { id: "erasure-untracked" }, "Untracked: this export recorded nothing of whose payloads it ",
        "carried (made before that was recorded), so the erasure treated it as possibly carrying the subject's, made after ",
        "one of them was stored; the count is at most what it carried, and it may have carried none.")] : null) : null,
    h("p", { class: "actions" }, h("button", {
      type: "button", id: "download", onclick: download, disabled: x.content_erased ? true : null,
      "aria-describedby": x.content_erased ? "content-erased" : null,
    }, x.content_erased ? "Download the export (content erased)" : "Download the export")),
    h("section", { class: "card" }, h("h2", {}, "Verify on the server"),
      h("p", {}, h("label", {}, recompute, " Recompute the artifact (slower; proves it is reproducible)")),
      h("button", { type: "button", id: "verify", onclick: verify }, "Verify"), verifyOut),
    h("section", { class: "card" }, h("h2", {}, "Verify offline (for an auditor)"),
      h("p", {}, "Save the export, its signed manifest and the keys, then run the verifier anywhere — no service needed:"),
      h("p", { class: "actions" },
        h("button", { type: "button", id: "save-envelope", onclick: () => saveFile("export.dsse.json", new Blob([x.dsse_envelope || ""], { type: "application/json" })) }, "Save export.dsse.json"),
        " ", h("button", { type: "button", id: "save-keys", onclick: () => saveFile("keys.json", new Blob([JSON.stringify(keys, null, 2)], { type: "application/json" })) }, "Save keys.json")),
      h("pre", { id: "offline-command" }, command),
      h("p", { class: "help" }, "Pin the public key you got from your operator out of band; the one shown is what this gateway reports.")));
}

// ---------------------------------------------------------------- Retention

// The scopes of the signed-in token, read from its payload: only to offer the forms a
// retention.admin may use. The server decides (a form sent without the scope is refused,
// and the refusal is shown like any error).
function tokenScopes() {
  try {
    const part = (token() || "").split(".")[1] || "";
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    return String(JSON.parse(atob(b64)).scope || "").split(" ").filter(Boolean);
  } catch (e) {
    return [];
  }
}

// An API error as the person acting should read it: the message, the reason, and each field
// the server named (google.rpc.BadRequest) with what is wrong with it.
function errorCallout(id, verb, err) {
  const details = (err.status && err.status.details) || [];
  const bad = details.find((d) => String(d["@type"] || "").endsWith("google.rpc.BadRequest"));
  const fields = bad ? bad.field_violations || [] : [];
  const reason = err.reason ? ` (${err.reason})` : "";
  return h("div", { class: "callout bad", role: "alert", id },
    h("p", {}, `${verb}: ${err.message}${reason}`),
    fields.length ? h("ul", {}, fields.map((f) => h("li", {}, h("code", {}, f.field), `: ${f.description}`))) : null);
}

// What the last change on this page did, shown once on the page it re-renders.
let retentionFlash = null;

function policyKept(p) {
  if (p.permanent) return "permanent";
  const days = Number(p.retention_days || 0);
  return `${days} day${days === 1 ? "" : "s"}`;
}

async function retentionPage(query) {
  const admin = tokenScopes().includes("retention.admin");
  const holdQuery = listQuery(query);
  const [policies, holds] = await Promise.all([
    api("/api/v1/logs/retention/policies"),
    api("/api/v1/logs/retention/holds", holdQuery),
  ]);
  const released = query.get("include_released") === "true";
  const flash = retentionFlash;
  retentionFlash = null;
  const policyTable = table("Retention policy per record type (and level)", [
    { title: "Record type", cell: (p) => label(p.record_type, "RETENTION_RECORD_TYPE_") },
    { title: "Level", cell: (p) => (p.level ? label(p.level, "SYSTEM_SEVERITY_") : "—") },
    { title: "Kept", cell: (p) => policyKept(p) },
    { title: "Class", cell: (p) => p.retention_class || "—" },
    { title: "Tags", cell: (p) => (p.compliance_tags || []).join(", ") || "—" },
    { title: "Set", cell: (p) => (p.is_default ? badge("default", "neutral")
      : h("span", {}, timeEl(p.updated_at), ` by ${p.updated_by_id || "—"}`)) },
  ], policies.policies || [], "No policies.");
  const holdRows = holds.holds || [];
  const holdColumns = [
    { title: "Scope", cell: (x) => label(x.scope, "LEGAL_HOLD_SCOPE_") },
    { title: "Target", cell: (x) => (x.scope === "LEGAL_HOLD_SCOPE_RUN" && x.target_id
      ? link(`#/runs/${enc(x.target_id)}/envelope`, x.target_id) : x.target_id || "the whole tenant") },
    { title: "Reason", cell: (x) => x.reason },
    { title: "Placed", cell: (x) => h("span", {}, timeEl(x.placed_at), ` by ${x.placed_by_id || "—"}`) },
    { title: "Status", cell: (x) => (x.active ? badge("active", "warn")
      : h("span", {}, badge("released", "neutral"), " ", timeEl(x.released_at), ` by ${x.released_by_id || "—"}: ${x.release_reason || ""}`)) },
  ];
  if (admin) holdColumns.push({ title: "Release", cell: (x) => (x.active ? releaseForm(x) : "—") });
  return h("section", { class: "page" }, h("h1", {}, "Retention"),
    h("p", { class: "lede" }, "How long each kind of evidence is kept, and the legal holds no retention or erasure may pass. ",
      "Every change is an entry in the ", link("#/audit?entity_type=AUDIT_ENTITY_TYPE_RETENTION_POLICY", "audit ledger"), "."),
    flash ? h("p", { class: "callout ok", role: "status", id: "retention-flash" }, flash) : null,
    admin ? null : h("p", { class: "callout warn", id: "retention-readonly" },
      "Read only: setting a policy or placing and releasing a hold needs the retention.admin scope."),
    h("section", { class: "card" }, h("h2", {}, "Policies"), policyTable, admin ? policyForm() : null),
    h("section", { class: "card" }, h("h2", {}, "Legal holds"),
      h("p", {}, released ? link("#/retention", "Active holds only") : link("#/retention?include_released=true", "Show released holds too")),
      table(released ? "Legal holds, newest first (released ones too)" : "Active legal holds, newest first", holdColumns, holdRows,
        released ? "No legal holds." : "No active legal holds."),
      pager("/retention", query, holds, "holds"),
      admin ? holdForm() : null));
}

// Sends a retention change; on success re-renders the page with `done(reply)` said on it, on
// an error shows it in `out` and leaves the form as it was (to correct and send again).
async function retentionChange(out, button, path, body, verb, done) {
  button.disabled = true;
  out.replaceChildren(h("p", { class: "loading" }, "Sending…"));
  try {
    const reply = await call(path, { method: "POST", body });
    retentionFlash = done(reply);
    announce(retentionFlash);
    await render();
  } catch (err) {
    out.replaceChildren(errorCallout(`${out.id}-error`, verb, err));
    announce(`${verb}: ${err.message}`);
    button.disabled = false;
  }
}

function policyForm() {
  const types = enumValues("RetentionRecordType", "aos.export.v1");
  const recordType = h("select", { id: "p-record-type", required: true },
    types.map((t) => h("option", { value: t }, label(t, "RETENTION_RECORD_TYPE_"))));
  const level = h("select", { id: "p-level" }, h("option", { value: "" }, "—"),
    enumValues("SystemSeverity").map((v) => h("option", { value: v }, label(v, "SYSTEM_SEVERITY_"))));
  const days = h("input", { id: "p-days", type: "number", min: "0", max: "36500", step: "1", value: "365" });
  const permanent = h("input", { id: "p-permanent", type: "checkbox" });
  const klass = h("select", { id: "p-class" }, ["STANDARD", "SOC2", "HIPAA", "GDPR"].map((c) => h("option", { value: c }, c)));
  const tags = h("input", { id: "p-tags", type: "text", placeholder: "e.g. pci, eu-data", "aria-describedby": "p-tags-help" });
  const out = h("div", { id: "policy-result", "aria-live": "polite" });
  const button = h("button", { type: "submit", id: "p-set" }, "Set policy");
  const levelNeeded = () => {
    const needed = recordType.value === "RETENTION_RECORD_TYPE_SYSTEM_RECORDS";
    level.disabled = !needed;
    if (!needed) level.value = "";
  };
  recordType.addEventListener("change", levelNeeded);
  permanent.addEventListener("change", () => { days.disabled = permanent.checked; });
  levelNeeded();
  return h("form", {
    class: "filters", id: "policy-form", "aria-label": "Set a retention policy",
    onsubmit: (event) => {
      event.preventDefault();
      const body = { record_type: recordType.value, permanent: permanent.checked, retention_class: klass.value,
        compliance_tags: tags.value.split(",").map((t) => t.trim()).filter(Boolean) };
      if (!permanent.checked) body.retention_days = Number(days.value || 0);
      if (level.value) body.level = level.value;
      retentionChange(out, button, "/api/v1/logs/retention/policies", body, "Policy not set", (reply) => {
        const p = reply.policy || {};
        const what = `${label(p.record_type, "RETENTION_RECORD_TYPE_")}${p.level ? ` ${label(p.level, "SYSTEM_SEVERITY_")}` : ""}`;
        return reply.changed ? `Policy set: ${what} kept ${policyKept(p)} (${p.retention_class}).`
          : `Nothing changed: ${what} already kept ${policyKept(p)} (${p.retention_class}).`;
      });
    },
  },
  h("div", { class: "field" }, h("label", { for: "p-record-type" }, "Record type"), recordType),
  h("div", { class: "field" }, h("label", { for: "p-level" }, "Level (system records)"), level),
  h("div", { class: "field" }, h("label", { for: "p-days" }, "Days kept"), days),
  h("div", { class: "field" }, h("label", { for: "p-permanent" }, "Permanent"), permanent),
  h("div", { class: "field" }, h("label", { for: "p-class" }, "Compliance class"), klass),
  h("div", { class: "field" }, h("label", { for: "p-tags" }, "Tags"), tags,
    h("span", { class: "help", id: "p-tags-help" }, "comma-separated")),
  h("div", { class: "field actions" }, button), out);
}

function holdForm() {
  const scope = h("select", { id: "h-scope" }, enumValues("LegalHoldScope", "aos.export.v1")
    .map((v) => h("option", { value: v }, label(v, "LEGAL_HOLD_SCOPE_"))));
  const target = h("input", { id: "h-target", type: "text", "aria-describedby": "h-target-help" });
  const reason = h("input", { id: "h-reason", type: "text", required: true });
  const out = h("div", { id: "hold-result", "aria-live": "polite" });
  const button = h("button", { type: "submit", id: "h-place" }, "Place hold");
  return h("section", {}, h("h3", {}, "Place a legal hold"), h("form", {
    class: "filters", id: "hold-form", "aria-label": "Place a legal hold",
    onsubmit: (event) => {
      event.preventDefault();
      const body = { scope: scope.value, reason: reason.value };
      if (target.value.trim()) body.target_id = target.value.trim();
      retentionChange(out, button, "/api/v1/logs/retention/holds", body, "Hold not placed", (reply) => {
        const x = reply.hold || {};
        return `Hold placed: ${label(x.scope, "LEGAL_HOLD_SCOPE_")} ${x.target_id || ""} (${x.hold_id}).`;
      });
    },
  },
  h("div", { class: "field" }, h("label", { for: "h-scope" }, "Scope"), scope),
  h("div", { class: "field" }, h("label", { for: "h-target" }, "Target"), target,
    h("span", { class: "help", id: "h-target-help" }, "run, incident or data subject id; empty for the tenant")),
  h("div", { class: "field grow" }, h("label", { for: "h-reason" }, "Reason"), reason),
  h("div", { class: "field actions" }, button)), out);
}

function releaseForm(hold) {
  const id = `r-${hold.hold_id.replace(/\W/g, "-")}`;
  const reason = h("input", { id, type: "text", required: true, "aria-label": `Why release hold ${hold.hold_id}` });
  const out = h("div", { id: `${id}-result`, "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Release");
  return h("form", {
    class: "release", "data-hold-id": hold.hold_id,
    onsubmit: (event) => {
      event.preventDefault();
      retentionChange(out, button, `/api/v1/logs/retention/holds/${enc(hold.hold_id)}:release`, { reason: reason.value },
        "Hold not released", (reply) => `Hold released: ${(reply.hold || {}).hold_id}.`);
    },
  }, reason, " ", button, out);
}

// ---------------------------------------------------------------- start

function start() {
  // `make run` prints /#token=…: read it once, keep it in this tab, and take it out of the URL and history.
  const match = window.location.hash.match(/^#token=([^&]+)/);
  if (match) {
    window.sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    window.history.replaceState(null, "", `${window.location.pathname}#/overview`);
  }
  document.getElementById("signout").addEventListener("click", () => {
    window.sessionStorage.removeItem(TOKEN_KEY);
    window.location.hash = "#/signin";
    render();
  });
  window.addEventListener("hashchange", render);
  render();
}

document.addEventListener("DOMContentLoaded", start);
