// recur's operator console: a page over the /v1 API, nothing loaded from another host.
// Views by hash route: #/overview, #/orders, #/orders/<id>, #/customers, #/customers/<id>,
// #/clocks, #/webhooks. Errors from the API are shown in [data-testid=error], never swallowed.

const TOKEN_KEY = "recur.token";

// Script errors of the page, kept for whoever looks (the browser tests check it stays empty).
window.__recurErrors = [];
window.addEventListener("error", (e) => window.__recurErrors.push(String(e.message || e)));
window.addEventListener("unhandledrejection", (e) => window.__recurErrors.push(String(e.reason)));
const SCOPES = { read: 1, write: 2, admin: 3 };
let me = null; // {name, channel, scope} from /v1/whoami

// ------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

async function api(method, path, body, extraHeaders) {
  const headers = { Accept: "application/json", ...(extraHeaders || {}) };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, "NETWORK", `cannot reach recur (${e.message})`);
  }
  let reply = null;
  const text = await res.text();
  try {
    reply = text ? JSON.parse(text) : null;
  } catch (_) {
    throw new ApiError(res.status, "HTTP_" + res.status, text.slice(0, 300) || res.statusText);
  }
  if (!res.ok || (reply && reply.ok === false)) {
    const e = (reply && reply.error) || {};
    throw new ApiError(res.status, e.code || "HTTP_" + res.status, e.message || res.statusText);
  }
  return reply && Object.prototype.hasOwnProperty.call(reply, "result") ? reply.result : reply;
}

const get = (path) => api("GET", path);
const command = (name, args, key) =>
  api("POST", `/v1/commands/${encodeURIComponent(name)}`, args || {}, key ? { "Idempotency-Key": key } : undefined);
const newKey = () => (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());

// ------------------------------------------------------------------------------------------
// Small DOM helpers (text is always set as text: nothing from the API becomes markup)

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function render(...nodes) {
  const main = document.getElementById("main");
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function showError(e) {
  const box = document.getElementById("error");
  if (!e) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = e instanceof ApiError ? e.message : String(e);
  if (e instanceof ApiError && e.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

// Runs an action: clears the last error, shows a new one.
async function attempt(fn) {
  showError(null);
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  }
}

const can = (scope) => me && SCOPES[me.scope] >= SCOPES[scope];
const badge = (status) => h("span", { class: `badge s-${status}`, testid: "order-status" }, status);
const fmtTime = (t) => (t ? String(t).replace("T", " ").replace(/\.\d+Z$/, "Z") : "—");
const kv = (pairs) => h("div", { class: "kv" }, pairs.flatMap(([k, v]) => [h("div", {}, k), h("div", {}, v)]));

function metric(metrics, name) {
  const series = metrics && metrics[name];
  if (series === undefined) return 0;
  if (typeof series === "number") return series;
  if (Array.isArray(series)) return series.reduce((s, x) => s + (typeof x.value === "number" ? x.value : x.count || 0), 0);
  if (typeof series === "object") return series.value !== undefined ? series.value : series.count || 0;
  return 0;
}

// ------------------------------------------------------------------------------------------
// Sign-in

function signInView(message) {
  const input = h("input", { type: "password", testid: "token-input", placeholder: "API token", autocomplete: "off", size: 40 });
  const err = h("div", { class: "error", testid: "sign-in-error", hidden: !message }, message || "");
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (ev) => {
        ev.preventDefault();
        sessionStorage.setItem(TOKEN_KEY, input.value.trim());
        try {
          me = await get("/v1/whoami");
          start();
        } catch (e) {
          sessionStorage.removeItem(TOKEN_KEY);
          err.hidden = false;
          err.textContent = e.message;
        }
      },
    },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "An API token of this recur (kept in this tab only)."),
    h("div", { class: "row" }, input, h("button", { type: "submit", testid: "sign-in" }, "Sign in")),
    err,
  );
  document.getElementById("nav").hidden = true;
  render(form);
}

// ------------------------------------------------------------------------------------------
// Views

async function overview(show) {
  const [daemons, m, clock] = await Promise.all([
    get("/v1/daemons"),
    command("getMetrics", {}),
    get("/v1/clock"),
  ]);
  const metrics = m.metrics || {};
  const rows = (Array.isArray(daemons) ? daemons : daemons.daemons || []).map((d) =>
    h("tr", { testid: "daemon-row" },
      h("td", {}, d.daemonId || d.id),
      h("td", {}, String((d.partitions || []).length !== undefined && Array.isArray(d.partitions) ? d.partitions.length : d.partitionsOwned ?? d.partitions)),
      h("td", { class: "hide-narrow" }, Array.isArray(d.partitions) ? d.partitions.join(", ") : ""),
      h("td", {}, d.ready === false ? "not ready" : "ready"),
      h("td", { class: "hide-narrow" }, fmtTime(d.started || d.startedAt))));
  const stat = (k, v, testid) => h("div", { class: "stat" }, h("div", { class: "v", testid }, v), h("div", { class: "k" }, k));
  const lag = metric(metrics, "recur_timer_lag_seconds");
  show(
    h("h1", {}, "Overview"),
    h("div", { class: "grid" },
      stat("timers due", String(metric(metrics, "recur_timers_due")), "timers-due"),
      stat("timer lag", `${Number(lag).toFixed(3)} s`, "timer-lag"),
      stat("transitions (answering daemon)", String(metric(metrics, "recur_transitions_total"))),
      stat("admin requests (answering daemon)", String(metric(metrics, "recur_admin_requests_total"))),
      stat("webhook deliveries waiting", String(metric(metrics, "recur_webhook_pending"))),
      stat("clock", fmtTime(clock.now))),
    h("h2", {}, "Daemons"),
    h("div", { class: "card" },
      h("table", {},
        h("thead", {}, h("tr", {}, h("th", {}, "daemon"), h("th", {}, "partitions"), h("th", { class: "hide-narrow" }, "which"), h("th", {}, "state"), h("th", { class: "hide-narrow" }, "started"))),
        h("tbody", {}, rows))),
  );
}

async function orders(params, show) {
  const search = h("input", { testid: "order-search", placeholder: "order id or customer id", value: params.get("q") || "" });
  const status = h("select", { testid: "status-filter" },
    ["", "DRAFT", "PENDING", "ACTIVE", "PAUSED", "CANCELED", "ENDED"].map((s) =>
      h("option", { value: s, selected: s === (params.get("status") || "") }, s || "any status")));
  const form = h("form", {
    class: "row",
    onsubmit: (ev) => {
      ev.preventDefault();
      const q = search.value.trim();
      const qs = new URLSearchParams();
      if (q) qs.set("q", q);
      if (status.value) qs.set("status", status.value);
      location.hash = `#/orders?${qs}`;
    },
  }, search, status, h("button", { type: "submit" }, "Search"));
  const q = (params.get("q") || "").trim();
  let list = [];
  let note = "";
  if (q) {
    // An order id first; otherwise a customer's orders.
    try {
      const o = await get(`/v1/orders/${encodeURIComponent(q)}`);
      list = [o];
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) throw e;
      const qs = new URLSearchParams({ customerId: q, limit: "100" });
      if (params.get("status")) qs.set("status", params.get("status"));
      list = (await get(`/v1/orders?${qs}`)).orders;
      note = `orders of customer ${q}`;
    }
  } else {
    const qs = new URLSearchParams({ limit: "50" });
    if (params.get("status")) qs.set("status", params.get("status"));
    list = (await get(`/v1/orders?${qs}`)).orders;
    note = "newest first";
  }
  const rows = list.map((o) =>
    h("tr", { testid: "order-row" },
      h("td", {}, h("a", { href: `#/orders/${encodeURIComponent(o.id)}` }, o.id)),
      h("td", {}, h("a", { href: `#/customers/${encodeURIComponent(o.customerId)}` }, o.customerId)),
      h("td", {}, badge(o.status)),
      h("td", { class: "hide-narrow" }, o.plan ? o.plan.name : ""),
      h("td", { class: "hide-narrow" }, fmtTime(o.createdDate))));
  show(
    h("h1", {}, "Orders"),
    form,
    h("p", { class: "muted" }, note),
    h("div", { class: "card" },
      rows.length
        ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "order"), h("th", {}, "customer"), h("th", {}, "status"), h("th", { class: "hide-narrow" }, "plan"), h("th", { class: "hide-narrow" }, "created"))), h("tbody", {}, rows))
        : h("p", { class: "muted" }, "No orders.")),
  );
}

function timelineItem(e) {
  return h("li", { testid: "timeline-item" },
    h("div", {}, h("span", { class: "t" }, e.type), " ", h("span", { class: "muted" }, `#${e.sequence} · ${fmtTime(e.eventTime)}${e.version !== undefined ? ` · v${e.version}` : ""}`)),
    e.data && Object.keys(e.data).length ? h("pre", {}, JSON.stringify(e.data)) : null);
}

async function orderView(id, show) {
  const [o, ev] = await Promise.all([
    get(`/v1/orders/${encodeURIComponent(id)}`),
    get(`/v1/orders/${encodeURIComponent(id)}/events?limit=100`),
  ]);
  const events = Array.isArray(ev) ? ev : ev.events || [];
  const cycle = o.currentCycle
    ? `${o.currentCycle.index} (${fmtTime(o.currentCycle.startedDate)} → ${fmtTime(o.currentCycle.endedDate)})`
    : "—";
  const dues = (o.paymentsDue || []).map((d) =>
    h("tr", {}, h("td", {}, `${d.kind || "CYCLE"} ${d.cycle}`), h("td", {}, `${d.amount} ${o.currency}`), h("td", {}, fmtTime(d.deadline)), h("td", { class: "hide-narrow" }, (d.retries || []).map(fmtTime).join(", "))));
  const pauses = (o.pausePeriods || []).map((p) => `${fmtTime(p.pauseDate)} → ${fmtTime(p.resumeDate)} (${p.status})`);
  const next = nextTimer(o);
  const actions = h("div", { class: "card" }, h("h2", {}, "Actions"), actionsFor(o));
  show(
    h("h1", {}, `Order ${o.id} `, badge(o.status)),
    h("div", { class: "card" },
      kv([
        ["customer", h("a", { href: `#/customers/${encodeURIComponent(o.customerId)}` }, o.customerId)],
        ["type", o.type],
        ["plan", `${o.plan.name} (${o.plan.id})`],
        ["current cycle", h("span", { testid: "order-cycle" }, cycle)],
        ["last payment", o.lastPaymentStatus],
        ["start → end", `${fmtTime(o.startDate)} → ${fmtTime(o.endDate)}`],
        ["next timer", next],
        ["pauses", pauses.length ? pauses.join("; ") : "—"],
        ["scheduled change", o.scheduledChange ? `${o.scheduledChange.plan ? o.scheduledChange.plan.name : "plan change"} at ${fmtTime(o.scheduledChange.effectiveDate)}` : "—"],
        ["credit balance", `${o.creditBalance} ${o.currency}`],
        ["version", String(o.version)],
      ])),
    dues.length ? h("div", { class: "card" }, h("h2", {}, "Payment dues"), h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "due"), h("th", {}, "amount"), h("th", {}, "deadline"), h("th", { class: "hide-narrow" }, "retries"))), h("tbody", {}, dues))) : null,
    actions,
    h("div", { class: "card" }, h("h2", {}, "Timeline (newest first)"), h("ul", { class: "timeline", testid: "timeline" }, events.map(timelineItem))),
  );
}

// The earliest instant the order's lifecycle will act on, as far as its fields say.
function nextTimer(o) {
  const c = [];
  if (o.status === "PENDING") c.push(["start", o.startDate]);
  if (o.currentCycle && o.currentCycle.endedDate && !["CANCELED", "ENDED"].includes(o.status)) c.push(["cycle end", o.currentCycle.endedDate]);
  for (const d of o.paymentsDue || []) {
    c.push(["payment deadline", d.deadline]);
    for (const r of d.retries || []) c.push(["payment retry", r]);
  }
  for (const p of o.pausePeriods || []) if (p.status === "ACTIVE" && p.resumeDate) c.push(["resume", p.resumeDate]);
  if (o.scheduledChange) c.push(["plan change", o.scheduledChange.effectiveDate]);
  const future = c.filter(([, t]) => t).sort((a, b) => (a[1] < b[1] ? -1 : 1));
  return future.length ? `${future[0][0]} at ${fmtTime(future[0][1])}` : "none";
}

function actionsFor(o) {
  if (!can("write")) return h("p", { class: "muted" }, "Your token can read only.");
  const id = o.id;
  const done = () => route();
  const box = h("div", {});
  const live = !["CANCELED", "ENDED"].includes(o.status);
  const amount = h("input", { placeholder: `amount (${o.currency})`, size: 10 });
  const pay = h("form", { class: "row", onsubmit: async (ev) => {
    ev.preventDefault();
    const r = await attempt(() => command("recordPayment", { orderId: id, paymentId: `console-${newKey()}`, amount: amount.value.trim() }, newKey()));
    if (r) done();
  } }, amount, h("button", { type: "submit", testid: "action-record-payment" }, "Record payment"));
  box.append(pay);
  const row = h("div", { class: "row" });
  if (o.status === "ACTIVE") {
    row.append(h("button", { testid: "action-pause", onclick: async () => { if (await attempt(() => command("pauseOrder", { orderId: id }, newKey()))) done(); } }, "Pause"));
  }
  if (o.status === "PAUSED") {
    row.append(h("button", { testid: "action-resume", onclick: async () => { if (await attempt(() => command("resumeOrder", { orderId: id }, newKey()))) done(); } }, "Resume"));
  }
  if (live) {
    const when = h("select", {}, h("option", { value: "NEXT_PAYMENT_DATE" }, "at period end"), h("option", { value: "IMMEDIATELY" }, "now"));
    row.append(when, h("button", { class: "secondary", testid: "action-cancel", onclick: async () => {
      if (await attempt(() => command("cancelOrder", { orderId: id, effectiveAt: when.value }, newKey()))) done();
    } }, "Cancel"));
  }
  box.append(row);
  if (live && o.pricing && o.pricing.subscription) box.append(changePlanForm(o, done));
  return box;
}

function changePlanForm(o, done) {
  const planId = h("input", { placeholder: "new plan id", size: 12 });
  const planName = h("input", { placeholder: "plan name", size: 14 });
  const price = h("input", { placeholder: `price (${o.currency})`, size: 9 });
  const unit = h("select", {}, ["MONTH", "WEEK", "DAY", "YEAR"].map((u) => h("option", { value: u }, u)));
  const when = h("select", {}, h("option", { value: "IMMEDIATELY" }, "now, prorated"), h("option", { value: "NEXT_PAYMENT_DATE" }, "at next payment date"));
  const out = h("div", {});
  const args = () => ({
    orderId: o.id,
    plan: { id: planId.value.trim(), name: planName.value.trim() || planId.value.trim() },
    pricing: { subscription: { cycleDuration: { count: 1, unit: unit.value }, cycleCount: o.pricing.subscription.cycleCount || 0 } },
    prices: [{ cycleFrom: 1, amount: price.value.trim() }],
    effectiveAt: when.value,
  });
  const previewBtn = h("button", { type: "button", testid: "action-change-plan", onclick: async () => {
    const p = await attempt(() => command("changePlan", { ...args(), preview: true }));
    if (!p) return;
    const pr = p.proration || {};
    const apply = h("button", { type: "button", testid: "change-plan-apply", onclick: async () => {
      if (await attempt(() => command("changePlan", args(), newKey()))) done();
    } }, "Apply");
    out.replaceChildren(h("div", { class: "preview", testid: "change-plan-preview" },
      h("div", {}, h("b", {}, "Preview: "), `${p.order.plan.name} — `,
        pr.net !== undefined ? `credit ${pr.credit}, charge ${pr.charge}, net ${pr.net} ${o.currency}` : "no proration"),
      h("div", { class: "muted" }, `events: ${(p.events || []).map((e) => e.type).join(", ")}`),
      h("div", { class: "row" }, apply)));
  } }, "Preview plan change");
  return h("div", {}, h("h2", {}, "Change plan"), h("div", { class: "row" }, planId, planName, price, unit, when, previewBtn), out);
}

async function customers(params, show) {
  const input = h("input", { placeholder: "customer id", value: params.get("q") || "" });
  show(
    h("h1", {}, "Customers"),
    h("form", { class: "row", onsubmit: (ev) => { ev.preventDefault(); if (input.value.trim()) location.hash = `#/customers/${encodeURIComponent(input.value.trim())}`; } },
      input, h("button", { type: "submit" }, "Open")),
  );
}

async function customerView(id, show) {
  const [stats, list] = await Promise.all([
    get(`/v1/customers/${encodeURIComponent(id)}/stats`),
    get(`/v1/orders?customerId=${encodeURIComponent(id)}&limit=100`),
  ]);
  const money = Object.entries(stats.money || {}).map(([c, m]) =>
    h("tr", {}, h("td", {}, c), h("td", {}, m.paid), h("td", {}, m.refunded)));
  show(
    h("h1", {}, `Customer ${id}`),
    h("div", { class: "card" }, kv([
      ["orders", String(stats.ordersCount)],
      ["paid orders", String(stats.paidOrdersCount)],
      ["active orders", String(stats.activeOrdersCount)],
      ["last order", fmtTime(stats.lastOrderDate)],
      ["last payment", fmtTime(stats.lastPaymentDate)],
    ])),
    h("div", { class: "card" }, h("h2", {}, "Money per currency"), h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "currency"), h("th", {}, "paid"), h("th", {}, "refunded"))), h("tbody", {}, money))),
    h("div", { class: "card" }, h("h2", {}, "Orders"), h("table", {}, h("tbody", {}, (list.orders || []).map((o) =>
      h("tr", { testid: "order-row" }, h("td", {}, h("a", { href: `#/orders/${encodeURIComponent(o.id)}` }, o.id)), h("td", {}, badge(o.status)), h("td", {}, o.plan ? o.plan.name : "")))))),
  );
}

async function clocks(show) {
  const clock = await get("/v1/clock");
  let list = null;
  let listError = null;
  try {
    list = await command("listTestClocks", {});
  } catch (e) {
    listError = e;
  }
  const sim = h("div", { class: "card" }, h("h2", {}, "The daemon's clock"), h("p", {}, `now: ${fmtTime(clock.now)}`));
  if (can("admin")) {
    const to = h("input", { type: "datetime-local", testid: "clock-advance-input" });
    sim.append(h("div", { class: "row" }, to, h("button", { testid: "clock-advance", onclick: async () => {
      if (!to.value) return;
      if (await attempt(() => command("advanceClock", { to: new Date(to.value + "Z").toISOString() }, newKey()))) route();
    } }, "Advance the simulated clock")));
  }
  const rows = ((list && (list.testClocks || list.clocks)) || []).map((c) => {
    const to = h("input", { type: "date", testid: "test-clock-advance-input" });
    return h("tr", { testid: "test-clock-row" },
      h("td", {}, c.testClockId),
      h("td", {}, c.name || ""),
      h("td", {}, fmtTime(c.frozenTime)),
      h("td", {}, c.status),
      h("td", {}, can("admin") ? h("div", { class: "row" }, to,
        h("button", { testid: "test-clock-advance", onclick: async () => {
          if (!to.value) return;
          if (await attempt(() => command("advanceTestClock", { testClockId: c.testClockId, to: `${to.value}T00:00:00Z` }, newKey()))) route();
        } }, "Advance"),
        h("button", { class: "secondary", onclick: async () => {
          if (confirm(`Delete test clock ${c.testClockId} with its orders and customers?`) &&
              await attempt(() => command("deleteTestClock", { testClockId: c.testClockId }, newKey()))) route();
        } }, "Delete")) : ""));
  });
  const create = can("admin") ? (() => {
    const name = h("input", { placeholder: "name" });
    const at = h("input", { type: "date" });
    return h("form", { class: "row", onsubmit: async (ev) => {
      ev.preventDefault();
      if (!at.value) return;
      if (await attempt(() => command("createTestClock", { name: name.value || undefined, frozenTime: `${at.value}T00:00:00Z` }, newKey()))) route();
    } }, name, at, h("button", { type: "submit" }, "Create test clock"));
  })() : null;
  if (listError) showError(listError);
  show(
    h("h1", {}, "Clocks"),
    sim,
    h("div", { class: "card" }, h("h2", {}, "Test clocks"),
      listError ? h("p", { class: "muted" }, `Test clocks are not available: ${listError.message}`) : null,
      create,
      h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "id"), h("th", {}, "name"), h("th", {}, "frozen time"), h("th", {}, "status"), h("th", {}, ""))), h("tbody", {}, rows))),
  );
}

async function webhooks(show) {
  const r = await command("getWebhookEndpoints", {});
  const rows = (r.endpoints || []).map((e) =>
    h("tr", { testid: "webhook-endpoint-row" },
      h("td", {}, e.id),
      h("td", {}, String(e.pending)),
      h("td", { class: "hide-narrow" }, String(e.retrying)),
      h("td", {}, String(e.dead)),
      h("td", {}, can("admin") ? h("button", { testid: "retry-dead", disabled: !e.dead, onclick: async () => {
        const done = await attempt(() => command("retryDeadWebhooks", { endpoint: e.id }, newKey()));
        if (done) route();
      } }, "Retry dead") : "")));
  show(
    h("h1", {}, "Webhooks"),
    h("div", { class: "card" }, rows.length
      ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "endpoint"), h("th", {}, "pending"), h("th", { class: "hide-narrow" }, "retrying"), h("th", {}, "dead"), h("th", {}, ""))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No webhook endpoints are configured.")),
  );
}

// ------------------------------------------------------------------------------------------
// Routing

let routeSeq = 0;

async function route() {
  // Only the latest route may draw: a slow view finishing after the next one began draws nothing.
  const mine = ++routeSeq;
  const show = (...nodes) => {
    if (mine === routeSeq) render(...nodes);
  };
  const [path, query] = (location.hash.replace(/^#/, "") || "/overview").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  showError(null);
  try {
    switch (parts[0]) {
      case "orders":
        return parts[1] ? await orderView(parts[1], show) : await orders(params, show);
      case "customers":
        return parts[1] ? await customerView(parts[1], show) : await customers(params, show);
      case "clocks":
        return await clocks(show);
      case "webhooks":
        return await webhooks(show);
      default:
        return await overview(show);
    }
  } catch (e) {
    if (mine !== routeSeq) return;
    if (e instanceof ApiError && e.status === 401) return signInView(e.message);
    showError(e);
    render(h("p", { class: "muted" }, "This view could not be loaded."));
  }
}

async function start() {
  try {
    me = await get("/v1/whoami");
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signInView(token() ? e.message : "");
    showError(e);
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = `${me.name} · ${me.scope} · channel ${me.channel}`;
  await route();
}

window.addEventListener("hashchange", () => { if (me) route(); });
start();
