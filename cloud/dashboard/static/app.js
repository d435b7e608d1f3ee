// pledgewatch dashboard: vanilla JS, no build step, no third-party code, nothing fetched from
// anywhere but this origin's /v1 API. Every piece of server text reaches the page through
// text nodes (el()/svg() below), never as HTML. See docs/dashboard.md.
"use strict";

(() => {
  const TOKEN_KEY = "pledgewatch.token";
  const REFRESH_MS = 30000; // re-read loans and the open site; alerts arrive live
  const BACKOFF_BASE_MS = 1000; // API down: retry after 1, 2, 4 ... s
  const BACKOFF_CAP_MS = 30000; // ... never more than 30 s apart
  const SSE_MAX_BUFFER = 1 << 20; // an event line longer than 1 MiB is a broken stream
  const ALERT_PAGE = 200; // alerts shown per state (open, acknowledged)
  const TABLE_ROWS = 100; // rows shown in a site table (the rest is counted, not drawn)
  const MAP_WINDOW_MS = 6 * 3600e3; // the map shows the last 6 h before the newest report
  const MAP_PAGES = 8; // ... at most 8 pages of fixes (4000 at the API's 500 a page)
  const TICKET_WINDOW_MS = 7 * 86400e3; // weigh tickets of the last 7 days ...
  const TICKET_PAGES = 4; // ... at most 4 pages, newest shown first
  const SEVERITY_RANK = { critical: 0, high: 1, warning: 2, info: 3 };

  const state = {
    token: null,
    alerts: new Map(), // id -> Alert, open and acknowledged only
    alertsAvailable: true,
    detailId: null,
    loans: [],
    selectedLoanId: null,
    sites: [],
    selectedSiteId: null,
    down: false,
    downAttempt: 0,
    downTimer: null,
    downTick: null,
    refreshTimer: null,
    stream: null, // AbortController of the live stream
    lastEventId: null,
    badEvents: 0,
  };

  // ---------------------------------------------------------------- DOM, text only

  const $ = (id) => document.getElementById(id);

  function append(node, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(node, child);
      else if (child instanceof Node) node.appendChild(child);
      else node.appendChild(document.createTextNode(String(child)));
    }
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    return node;
  }

  /** An HTML element; string children become text nodes, so server text is never parsed. */
  function el(tag, attrs, ...children) {
    return append(setAttrs(document.createElement(tag), attrs), children);
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, ...children) {
    return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
  }

  function fill(node, ...children) {
    node.replaceChildren();
    return append(node, children);
  }

  const muted = (text) => el("p", { class: "muted" }, text);
  const panelBody = (id) => $(id).querySelector(".body");

  // ---------------------------------------------------------------- formatting

  function num(x) {
    if (typeof x === "number") return Number.isFinite(x) ? x : null;
    if (typeof x === "string" && x.trim() !== "" && Number.isFinite(Number(x))) return Number(x);
    return null;
  }

  function toDate(value) {
    if (value === null || value === undefined) return null;
    const d = typeof value === "number" ? new Date(value) : new Date(String(value));
    return Number.isNaN(d.getTime()) ? null : d;
  }

  function fmtTime(value) {
    const d = toDate(value);
    if (!d) return value === null || value === undefined ? "-" : String(value);
    return d.toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }

  function fmtAge(value) {
    const d = toDate(value);
    if (!d) return "never";
    const s = Math.round((Date.now() - d.getTime()) / 1000);
    if (s < 0) return "just now";
    if (s < 90) return `${s} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 172800) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  const intFmt = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
  function fmtNum(x, digits = 0) {
    const n = num(x);
    if (n === null) return "-";
    return digits ? n.toFixed(digits) : intFmt.format(n);
  }
  const fmtKg = (x) => (num(x) === null ? "-" : `${fmtNum(x)} kg`);
  const fmtMoney = (x, cur) => (num(x) === null ? "-" : `${fmtNum(x)} ${cur || ""}`.trim());
  const fmtPct = (x) => (num(x) === null ? "-" : `${(num(x) * 100).toFixed(1)} %`);

  // ---------------------------------------------------------------- API

  class ApiDown extends Error {}
  class ApiError extends Error {
    constructor(status, reason, detail) {
      super(`${status} ${reason}: ${detail}`);
      this.status = status;
      this.reason = reason;
      this.detail = detail;
    }
  }

  async function errorFrom(resp) {
    let reason = `http_${resp.status}`;
    let detail = resp.statusText || "";
    try {
      const body = await resp.json();
      if (body && typeof body === "object") {
        if (typeof body.reason === "string") reason = body.reason;
        if (body.detail !== undefined) detail = typeof body.detail === "string"
          ? body.detail : JSON.stringify(body.detail);
      }
    } catch (_) { /* not JSON: keep the status line */ }
    return new ApiError(resp.status, reason, detail);
  }

  /** fetch + bearer token; throws ApiDown (no answer, or a proxy's 502/503/504) or ApiError. */
  async function api(path, { method = "GET", body, token = state.token, signal } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, signal, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiDown(String(err));
    }
    if (resp.status === 502 || resp.status === 504) throw new ApiDown(`HTTP ${resp.status}`);
    if (!resp.ok) throw await errorFrom(resp);
    if (resp.status === 204) return null;
    try {
      return await resp.json();
    } catch (err) {
      throw new ApiError(resp.status, "bad_response", "the API answered something that is " +
        "not JSON");
    }
  }

  const notAvailable = (e) => e instanceof ApiError && (e.status === 404 || e.status === 405);

  /**
   * What every panel does with a failure: a dead token ends the session, a dead API raises
   * the banner (the panel keeps what it showed), an endpoint this cloud does not have says
   * "not available", anything else says what the API said. Never throws.
   */
  function failed(err, body, what) {
    if (err instanceof ApiError && err.status === 401) {
      sessionEnded(err.detail);
    } else if (err instanceof ApiDown) {
      apiDown();
    } else if (notAvailable(err)) {
      if (body) fill(body, el("p", { class: "muted na" }, `${what}: not available`));
    } else if (err instanceof ApiError && err.status === 403) {
      if (body) fill(body, el("p", { class: "error" }, `${what}: your role may not see this`));
    } else if (err instanceof ApiError) {
      if (body) fill(body, el("p", { class: "error" }, `${what}: ${err.reason} - ${err.detail}`));
    } else if (!(err && err.name === "AbortError")) {
      console.error(what, err);
      if (body) fill(body, el("p", { class: "error" }, `${what}: unexpected answer from the API`));
    }
  }

  /**
   * GET ``path`` and follow ``next_cursor`` for at most ``maxPages`` pages: the first page's
   * body with every page's ``items`` joined, and ``truncated`` when pages were left.
   */
  async function pages(path, maxPages) {
    const first = await api(path);
    if (!first || !Array.isArray(first.items) || maxPages <= 1) return first;
    const items = first.items.slice();
    let cursor = first.next_cursor;
    for (let i = 1; cursor && i < maxPages; i++) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api(`${path}${sep}cursor=${encodeURIComponent(cursor)}`);
      items.push(...(Array.isArray(page && page.items) ? page.items : []));
      cursor = page && page.next_cursor;
    }
    return { ...first, items, next_cursor: cursor || null, truncated: Boolean(cursor) };
  }

  async function panel(body, what, path, render, maxPages = 1) {
    try {
      render(body, await pages(path, maxPages));
    } catch (err) {
      failed(err, body, what);
    }
  }

  // ---------------------------------------------------------------- notices and banner

  let noticeTimer = null;
  function notice(text, kind = "info") {
    const node = $("notice");
    node.className = `notice ${kind}`;
    fill(node, text);
    node.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { node.hidden = true; }, 8000);
  }

  function backoffMs(attempt) {
    const ms = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
    return Math.round(ms * (0.8 + 0.2 * Math.random())); // jitter: many tabs, one API
  }

  /** The API did not answer: show the banner and probe /healthz with capped backoff. */
  function apiDown() {
    if (state.down) return;
    state.down = true;
    stopStream();
    clearInterval(state.refreshTimer);
    setLive("offline");
    scheduleProbe();
  }

  function scheduleProbe() {
    const delay = backoffMs(state.downAttempt++);
    const due = Date.now() + delay;
    const banner = $("banner");
    const paint = () => {
      const s = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      fill(banner, `API unreachable, retrying in ${s}s`);
    };
    paint();
    banner.hidden = false;
    clearInterval(state.downTick);
    state.downTick = setInterval(paint, 250);
    clearTimeout(state.downTimer);
    state.downTimer = setTimeout(probe, delay);
  }

  async function probe() {
    clearInterval(state.downTick);
    fill($("banner"), "API unreachable, retrying now");
    try {
      const resp = await fetch("/healthz", { cache: "no-store" });
      if (!resp.ok) throw new Error(`healthz ${resp.status}`);
    } catch (_) {
      scheduleProbe();
      return;
    }
    recovered();
    if (state.token) startApp(); // reload everything and resume the stream
    else $("login-error").hidden = true;
  }

  function recovered() {
    clearTimeout(state.downTimer);
    clearInterval(state.downTick);
    state.down = false;
    state.downAttempt = 0;
    $("banner").hidden = true;
  }

  // ---------------------------------------------------------------- session

  function showLogin(message, kind) {
    $("app").hidden = true;
    $("notice").hidden = true;
    $("logout").hidden = true;
    $("live").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.className = kind === "info" ? "info" : "error";
    if (message) fill(err, message);
    $("token").focus();
  }

  /** Forget the session's data too: the next token may belong to another bank. */
  function stopApp() {
    stopStream();
    clearInterval(state.refreshTimer);
    state.alerts.clear();
    state.detailId = null;
    state.lastEventId = null;
    state.selectedLoanId = null;
    state.selectedSiteId = null;
    $("alert-detail").hidden = true;
    for (const id of ["loans", "valuation", "alerts", "alert-count", "site-tabs", "herd",
      "stock", "map", "tickets", "devices"]) {
      const node = $(id).querySelector(".body") || $(id);
      fill(node, id === "alert-count" || id === "valuation" ? null : muted("loading ..."));
    }
  }

  /** The token stopped working mid-session (revoked, expired): back to the login form. */
  function sessionEnded(detail) {
    if (!state.token) return;
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    stopApp();
    showLogin(`Your session has ended (${detail || "token no longer valid"}). ` +
              "Log in again with a valid token.");
  }

  async function login(event) {
    event.preventDefault();
    const token = $("token").value.trim();
    const err = $("login-error");
    if (!token) return;
    try {
      await api("/v1/loans", { token }); // any viewer route proves the token
    } catch (e) {
      err.className = "error";
      if (e instanceof ApiError && e.status === 401) {
        fill(err, `Login failed: the API refused this token (${e.detail}).`);
      } else if (e instanceof ApiDown) {
        fill(err, "Login failed: the API is unreachable.");
        apiDown();
      } else {
        fill(err, `Login failed: ${e.message || e}`);
      }
      err.hidden = false;
      return;
    }
    state.token = token;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    if (state.down) recovered(); // it answered: no need to wait for the next probe
    startApp();
  }

  function logout() {
    state.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    stopApp();
    showLogin("Logged out.", "info");
  }

  function startApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("logout").hidden = false;
    $("live").hidden = false;
    refreshAll();
    loadAlerts().then(startStream);
    clearInterval(state.refreshTimer);
    state.refreshTimer = setInterval(refreshAll, REFRESH_MS);
  }

  function refreshAll() {
    if (state.down || !state.token) return;
    loadLoans();
    loadSites();
    if (!state.stream) loadAlerts(); // no live stream: poll instead
  }

  // ---------------------------------------------------------------- loans

  function lightOf(valuation, loan) {
    const now = valuation && valuation.now;
    if (!now) return "none";
    if (typeof now.status === "string") return now.status;
    const ltv = num(now.ltv);
    if (ltv === null) return "none";
    if (ltv >= num(loan.liquidation_line)) return "liquidation";
    if (ltv >= num(loan.margin_call_line)) return "margin_call";
    if (ltv >= num(loan.ltv_line)) return "warning";
    return "ok";
  }

  const LIGHT_TEXT = {
    ok: "within LTV line", warning: "above LTV line", margin_call: "margin call",
    liquidation: "liquidation", none: "no valuation",
  };

  async function loadLoans() {
    const body = panelBody("loans");
    try {
      const loans = await api("/v1/loans");
      if (!Array.isArray(loans)) throw new TypeError("loans is not a list");
      state.loans = loans;
      const valuations = await Promise.all(loans.map((loan) =>
        api(`/v1/loans/${encodeURIComponent(loan.id)}/valuation`).catch((err) => {
          if (err instanceof ApiDown) throw err;
          return null; // this loan's valuation: not available (the row says so)
        })));
      if (!state.token || state.down) return;
      if (!loans.some((l) => l.id === state.selectedLoanId)) {
        state.selectedLoanId = loans.length ? loans[0].id : null;
      }
      renderLoans(body, loans, valuations);
      const i = loans.findIndex((l) => l.id === state.selectedLoanId);
      renderValuation($("valuation"), i >= 0 ? loans[i] : null, i >= 0 ? valuations[i] : null);
    } catch (err) {
      failed(err, body, "Loans");
    }
  }

  function renderLoans(body, loans, valuations) {
    if (!loans.length) return fill(body, muted("No loans in this bank yet."));
    const rows = loans.map((loan, i) => {
      const v = valuations[i];
      const now = v && v.now;
      const light = lightOf(v, loan);
      return el("tr", {
        class: loan.id === state.selectedLoanId ? "selected clickable" : "clickable",
        "data-loan": loan.code,
        onclick: () => { state.selectedLoanId = loan.id; loadLoans(); },
      },
      el("td", {}, el("span", { class: `light ${light}`, title: LIGHT_TEXT[light] || light }),
        " ", LIGHT_TEXT[light] || light),
      el("td", {}, loan.code),
      el("td", { class: "num" }, fmtMoney(loan.outstanding, loan.currency)),
      el("td", { class: "num" }, now ? fmtMoney(now.value, loan.currency) : "-"),
      el("td", { class: "num" }, now ? `${fmtNum(now.low)} - ${fmtNum(now.high)}` : "-"),
      el("td", { class: "num" }, now ? fmtPct(now.coverage) : "-"),
      el("td", { class: "num" }, now ? fmtPct(now.ltv) : (v === null ? "not available" : "-")),
      el("td", { class: "num" },
        `${fmtPct(loan.ltv_line)} / ${fmtPct(loan.margin_call_line)} / ` +
        `${fmtPct(loan.liquidation_line)}`));
    });
    fill(body, el("table", {},
      el("thead", {}, el("tr", {}, ["Status", "Loan", "Outstanding", "Collateral value",
        "Band (low - high)", "Coverage", "LTV", "Lines: LTV / margin call / liquidation"]
        .map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)));
  }

  function renderValuation(node, loan, valuation) {
    if (!loan) return fill(node);
    const title = el("h3", {}, `Value over time: ${loan.code}`);
    if (valuation === null) return fill(node, title, muted("Valuation: not available"));
    const history = Array.isArray(valuation.history) ? valuation.history.slice() : [];
    if (valuation.now && !history.some((v) => v.as_of === valuation.now.as_of)) {
      history.push(valuation.now);
    }
    const points = history
      .map((v) => ({ t: toDate(v.as_of), value: num(v.value), low: num(v.low), high: num(v.high) }))
      .filter((p) => p.t && p.value !== null)
      .sort((a, b) => a.t - b.t);
    if (points.length < 1) return fill(node, title, muted("No valuation history yet."));
    const outstanding = num(loan.outstanding);
    // value at which the loan crosses each line: outstanding / value = line
    const lines = [["LTV line", num(loan.ltv_line), "line-ltv"],
      ["margin call", num(loan.margin_call_line), "line-margin"],
      ["liquidation", num(loan.liquidation_line), "line-liq"]]
      .filter(([, f]) => outstanding !== null && f)
      .map(([label, f, cls]) => ({ label, value: outstanding / f, cls }));
    fill(node, title, valueChart(points, lines, loan.currency));
  }

  function valueChart(points, lines, currency) {
    const W = 640, H = 230, L = 70, R = 110, T = 20, B = 30;
    const t0 = points[0].t.getTime();
    const t1 = Math.max(points[points.length - 1].t.getTime(), t0 + 1);
    const ys = points.flatMap((p) => [p.value, p.low, p.high]).filter((y) => y !== null)
      .concat(lines.map((l) => l.value));
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1) { y0 -= 1; y1 += 1; }
    const pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    const x = (t) => L + ((t.getTime() - t0) / (t1 - t0)) * (W - L - R);
    const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    const path = (pts) => pts.map((p, i) => `${i ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`)
      .join(" ");
    const banded = points.filter((p) => p.low !== null && p.high !== null);
    const band = banded.length
      ? path(banded.map((p) => [x(p.t), y(p.high)]).concat(
        banded.slice().reverse().map((p) => [x(p.t), y(p.low)]))) + " Z"
      : null;
    const ticks = [0, 0.5, 1].map((f) => y0 + f * (y1 - y0));
    return svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
      "aria-label": "collateral value over time with its low-high band" },
    svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "plot" }),
    ticks.map((v) => [
      svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }),
      svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmtNum(v)),
    ]),
    svg("text", { x: L, y: H - 8, class: "tick" }, fmtTime(points[0].t)),
    svg("text", { x: W - R, y: H - 8, class: "tick", "text-anchor": "end" },
      fmtTime(points[points.length - 1].t)),
    band && svg("path", { d: band, class: "band" }),
    lines.map((l) => [
      svg("line", { x1: L, x2: W - R, y1: y(l.value), y2: y(l.value), class: `limit ${l.cls}` }),
      svg("text", { x: W - R + 4, y: y(l.value) + 4, class: `tick ${l.cls}` }, l.label),
    ]),
    svg("path", { d: path(points.map((p) => [x(p.t), y(p.value)])), class: "value" }),
    points.length === 1 && svg("circle", { cx: x(points[0].t), cy: y(points[0].value), r: 3,
      class: "value-dot" }),
    svg("text", { x: L, y: T - 6, class: "tick" }, `value (${currency || "?"})`));
  }

  // ---------------------------------------------------------------- alerts

  async function loadAlerts() {
    const body = panelBody("alerts");
    try {
      const pages = await Promise.all(["open", "acknowledged"].map((s) =>
        api(`/v1/alerts?state=${s}&limit=${ALERT_PAGE}`)));
      state.alerts.clear();
      for (const page of pages) {
        for (const a of (page && Array.isArray(page.items)) ? page.items : []) {
          if (a && a.id !== undefined) state.alerts.set(a.id, a);
        }
      }
      state.alertsAvailable = true;
      renderAlerts();
    } catch (err) {
      if (notAvailable(err)) state.alertsAvailable = false;
      failed(err, body, "Alerts");
      fill($("alert-count"));
    }
  }

  function sortedAlerts() {
    return [...state.alerts.values()].sort((a, b) =>
      (SEVERITY_RANK[a.severity] ?? 9) - (SEVERITY_RANK[b.severity] ?? 9) ||
      String(b.opened_at).localeCompare(String(a.opened_at)) || b.id - a.id);
  }

  function renderAlerts(flashId) {
    const body = panelBody("alerts");
    const alerts = sortedAlerts();
    fill($("alert-count"), `(${alerts.length})`);
    if (!alerts.length) return fill(body, muted("No open alerts."));
    fill(body, el("table", { class: "alerts" },
      el("thead", {}, el("tr", {}, ["Severity", "Kind", "Subject", "Site / loan", "Summary",
        "Event time", "State", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, alerts.map((a) => alertRow(a, a.id === flashId)))));
  }

  function alertRow(a, flash) {
    const actions = el("td", { class: "actions" },
      a.state === "open" && el("button", { type: "button", class: "small ack",
        onclick: (e) => { e.stopPropagation(); transition(a.id, "ack"); } }, "Acknowledge"),
      el("button", { type: "button", class: "small resolve",
        onclick: (e) => { e.stopPropagation(); transition(a.id, "resolve"); } }, "Resolve"));
    return el("tr", {
      class: `clickable alert sev-${a.severity}${flash ? " flash" : ""}`,
      "data-alert-id": a.id, "data-state": a.state,
      onclick: () => openDetail(a.id),
    },
    el("td", {}, el("span", { class: `sev sev-${a.severity}` }, a.severity)),
    el("td", {}, a.kind),
    el("td", {}, `${a.subject_type} ${a.subject_id}`),
    el("td", {}, [a.site, a.loan].filter(Boolean).join(" / ") || "-"),
    el("td", { class: "summary" }, a.summary),
    el("td", {}, fmtTime(a.event_time)),
    el("td", { class: "state" }, a.state),
    actions);
  }

  async function transition(id, action) {
    const verb = action === "ack" ? "acknowledge" : "resolve";
    try {
      const answer = await api(`/v1/alerts/${encodeURIComponent(id)}/${action}`,
        { method: "POST", body: {} });
      const updated = answer && answer.id === id ? answer : await api(`/v1/alerts/${id}`);
      upsertAlert(updated);
      notice(`Alert #${id} ${updated.state}.`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        notice(`You may not ${verb} alerts: your token's role is too low (${err.detail}).`,
          "error");
      } else if (err instanceof ApiError && err.status === 409) {
        notice(`Alert #${id} could not be ${verb}d: ${err.detail}`, "error");
        loadAlerts();
      } else if (err instanceof ApiError && ![401, 404, 405].includes(err.status)) {
        notice(`Alert #${id}: ${err.reason} - ${err.detail}`, "error");
      } else if (notAvailable(err)) {
        notice(`Alert #${id}: ${verb} is not available on this API.`, "error");
      } else {
        failed(err, null, "Alert");
      }
    }
  }

  function upsertAlert(a) {
    if (!a || a.id === undefined) return;
    if (a.state === "resolved") state.alerts.delete(a.id);
    else state.alerts.set(a.id, a);
    renderAlerts(a.id);
    if (state.detailId === a.id) openDetail(a.id);
  }

  async function openDetail(id) {
    state.detailId = id;
    const section = $("alert-detail");
    const body = section.querySelector(".body");
    section.hidden = false;
    fill($("alert-detail-title"), `#${id}`);
    try {
      const a = await api(`/v1/alerts/${encodeURIComponent(id)}`);
      if (state.detailId === id) renderDetail(body, a);
    } catch (err) {
      failed(err, body, "Alert detail");
    }
  }

  function renderDetail(body, a) {
    const facts = [["Kind", a.kind], ["Severity", a.severity], ["State", a.state],
      ["Subject", `${a.subject_type} ${a.subject_id}`], ["Site", a.site || "-"],
      ["Loan", a.loan || "-"], ["Summary", a.summary], ["Event time", fmtTime(a.event_time)],
      ["Opened", fmtTime(a.opened_at)], ["Last seen", fmtTime(a.last_seen_at)],
      ["Acknowledged", fmtTime(a.acknowledged_at)], ["Resolved", fmtTime(a.resolved_at)],
      ["Resolved by", a.resolved_by || "-"]];
    const audit = Array.isArray(a.audit) ? a.audit : [];
    const comments = Array.isArray(a.comments) ? a.comments : [];
    const input = el("input", { type: "text", maxlength: 2000, placeholder: "Add a comment" });
    const form = el("form", { class: "comment", onsubmit: (e) => {
      e.preventDefault();
      if (input.value.trim()) comment(a.id, input.value.trim());
    } }, input, el("button", { type: "submit", class: "small" }, "Comment"));
    fill(body,
      el("dl", { class: "facts" }, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      el("h3", {}, "Evidence"),
      a.evidence && Object.keys(a.evidence).length ? jsonView(a.evidence) : muted("none"),
      el("h3", {}, "Audit trail"),
      audit.length ? el("table", { class: "audit" },
        el("thead", {}, el("tr", {}, ["At", "Who", "Action", "From", "To", "Note"]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, audit.map((e) => el("tr", {},
          el("td", {}, fmtTime(e.at)), el("td", {}, e.actor || "-"), el("td", {}, e.action),
          el("td", {}, e.from_state || "-"), el("td", {}, e.to_state || "-"),
          el("td", {}, e.note || ""))))) : muted("no entries"),
      el("h3", {}, "Comments"),
      comments.length ? el("ul", { class: "comments" }, comments.map((c) =>
        el("li", {}, el("span", { class: "muted" }, `${fmtTime(c.at)} ${c.author || ""}: `),
          c.text))) : muted("none"),
      form);
  }

  /** Evidence of any shape as nested definition lists; every value as text. */
  function jsonView(value, depth = 0) {
    if (value === null || typeof value !== "object" || depth > 6) {
      return el("span", { class: "json" }, typeof value === "string" ? value
        : JSON.stringify(value));
    }
    if (Array.isArray(value)) {
      if (!value.length) return el("span", { class: "muted" }, "(none)");
      const shown = value.slice(0, 50);
      return el("ol", { class: "json" }, shown.map((v) => el("li", {}, jsonView(v, depth + 1))),
        value.length > shown.length && el("li", { class: "muted" },
          `... ${value.length - shown.length} more`));
    }
    return el("dl", { class: "json" }, Object.entries(value).map(([k, v]) =>
      [el("dt", {}, k), el("dd", {}, jsonView(v, depth + 1))]));
  }

  async function comment(id, text) {
    try {
      await api(`/v1/alerts/${encodeURIComponent(id)}/comments`, { method: "POST",
        body: { text } });
      openDetail(id);
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        notice(`You may not comment: your token's role is too low (${err.detail}).`, "error");
      } else if (err instanceof ApiError && err.status !== 401) {
        notice(`Comment not saved: ${err.reason} - ${err.detail}`, "error");
      } else {
        failed(err, null, "Comment");
      }
    }
  }

  // ---------------------------------------------------------------- live stream (SSE)

  function setLive(text) {
    fill($("live-state"), text);
    $("live").dataset.state = text;
  }

  function stopStream() {
    if (state.stream) state.stream.abort();
    state.stream = null;
  }

  /**
   * GET /v1/alerts/stream with fetch() rather than EventSource, which cannot send the
   * Authorization header. Parses text/event-stream itself and resumes with Last-Event-ID.
   */
  async function startStream() {
    if (!state.token || state.down || !state.alertsAvailable) {
      if (!state.alertsAvailable) setLive("not available");
      return;
    }
    stopStream();
    const ctrl = new AbortController();
    state.stream = ctrl;
    let attempt = 0;
    while (!ctrl.signal.aborted) {
      setLive(attempt ? "reconnecting" : "connecting");
      const headers = { Accept: "text/event-stream", Authorization: `Bearer ${state.token}` };
      if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
      try {
        const resp = await fetch("/v1/alerts/stream", { headers, signal: ctrl.signal,
          cache: "no-store" });
        if (!resp.ok) {
          const err = await errorFrom(resp);
          if (err.status === 401) return sessionEnded(err.detail);
          if (notAvailable(err)) {
            if (state.stream === ctrl) state.stream = null;
            setLive("not available (polling)");
            return;
          }
          throw err;
        }
        setLive("connected");
        attempt = 0;
        await readEvents(resp.body, onServerEvent);
      } catch (err) {
        if (ctrl.signal.aborted) return;
        // an API error (5xx, a broken stream) retries; a broken connection: is it down?
        if (!(err instanceof ApiError)) {
          if (state.stream === ctrl) state.stream = null;
          return apiDown();
        }
      }
      if (ctrl.signal.aborted) return;
      setLive("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, backoffMs(attempt++)));
    }
  }

  /** Reads a text/event-stream body and calls onEvent({id, event, data}) per event. */
  async function readEvents(stream, onEvent) {
    const reader = stream.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let event = "message";
    let data = [];
    let id = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        if (buffer[nl] === "\r" && nl === buffer.length - 1) break; // maybe \r\n: wait
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) onEvent({ id, event, data: data.join("\n") });
          event = "message";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "data") data.push(val);
        else if (field === "event") event = val || "message";
        else if (field === "id" && !val.includes("\0")) { id = val; state.lastEventId = val; }
      }
      if (buffer.length > SSE_MAX_BUFFER) {
        reader.cancel();
        throw new ApiError(200, "bad_stream", "event stream line too long");
      }
    }
  }

  function onServerEvent({ event, data }) {
    if (event !== "alert") return;
    let alert;
    try {
      alert = JSON.parse(data);
    } catch (_) {
      state.badEvents += 1; // counted, shown in the live badge's title, never fatal
      $("live").title = `${state.badEvents} malformed event(s) ignored`;
      return;
    }
    if (!alert || typeof alert !== "object" || alert.id === undefined) {
      state.badEvents += 1;
      $("live").title = `${state.badEvents} malformed event(s) ignored`;
      return;
    }
    upsertAlert(alert);
  }

  // ---------------------------------------------------------------- sites

  async function loadSites() {
    const tabs = $("site-tabs");
    let sites;
    try {
      sites = await api("/v1/sites");
      if (!Array.isArray(sites)) throw new TypeError("sites is not a list");
    } catch (err) {
      failed(err, tabs, "Sites");
      return;
    }
    state.sites = sites;
    if (!sites.some((s) => s.id === state.selectedSiteId)) {
      state.selectedSiteId = sites.length ? sites[0].id : null;
    }
    fill(tabs, sites.length ? sites.map((s) => el("button", {
      type: "button", "data-site": s.code,
      class: s.id === state.selectedSiteId ? "tab active" : "tab",
      onclick: () => { state.selectedSiteId = s.id; loadSites(); },
    }, `${s.code} (${s.kind})`)) : muted("No sites in this bank yet."));
    const site = sites.find((s) => s.id === state.selectedSiteId);
    if (site) loadSite(site);
  }

  async function loadSite(site) {
    const base = `/v1/sites/${encodeURIComponent(site.id)}`;
    panel(panelBody("herd"), "Herd", `${base}/herd?limit=${TABLE_ROWS}`, renderHerd);
    panel(panelBody("stock"), "Stock", `${base}/inventory`, renderStock);
    // positions and tickets come oldest first, paged: ask only for a window before the
    // site's newest report (event time, so a replayed or simulated past works too)
    let newest = null;
    try {
      const devices = await api(`${base}/devices`);
      renderDevices(panelBody("devices"), devices);
      const seen = itemsOf(devices, "devices").map((d) => num(d.last_seen_ms)).filter(Boolean);
      newest = seen.length ? Math.max(...seen) : null;
    } catch (err) {
      failed(err, panelBody("devices"), "Devices");
    }
    const since = (windowMs) => (newest ? `?since=${Math.max(0, newest - windowMs)}` : "");
    panel(panelBody("map"), "Positions", `${base}/positions${since(MAP_WINDOW_MS)}`,
      renderMap, MAP_PAGES);
    panel(panelBody("tickets"), "Weigh tickets",
      `${base}/weigh-tickets${since(TICKET_WINDOW_MS)}`, renderTickets, TICKET_PAGES);
  }

  const itemsOf = (data, key) => (Array.isArray(data) ? data
    : data && Array.isArray(data[key]) ? data[key]
      : data && Array.isArray(data.items) ? data.items : []);

  function table(headers, rows, total) {
    return [el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows)),
    total > rows.length && muted(`${rows.length} of ${total} shown`)];
  }

  function bar(value, of, bad) {
    const f = of > 0 ? Math.max(0, Math.min(1, value / of)) : 0;
    return svg("svg", { viewBox: "0 0 200 12", class: "bar", "aria-hidden": "true" },
      svg("rect", { x: 0, y: 0, width: 200, height: 12, class: "bar-bg" }),
      svg("rect", { x: 0, y: 0, width: (200 * f).toFixed(1), height: 12,
        class: bad ? "bar-fg bad" : "bar-fg" }));
  }

  function renderHerd(body, h) {
    const pledged = num(h.pledged), present = num(h.present);
    const missing = Array.isArray(h.missing) ? h.missing : [];
    const animals = Array.isArray(h.animals) ? h.animals : [];
    if (!pledged && !present && !animals.length) {
      return fill(body, muted("No animals pledged at this site."));
    }
    fill(body,
      el("p", { class: "big" }, el("span", { class: "herd-present" }, fmtNum(present)),
        " present of ", el("span", { class: "herd-pledged" }, fmtNum(pledged)), " pledged"),
      bar(present || 0, pledged || 0, (present || 0) < (pledged || 0)),
      missing.length ? el("p", {}, `Missing (${missing.length}): `,
        el("span", { class: "mono" }, missing.slice(0, 20).join(", ")),
        missing.length > 20 ? " ..." : "") : el("p", { class: "muted" }, "none missing"),
      animals.length ? table(["EPC", "Loan", "Last seen", "Est. weight", "Health"],
        animals.slice(0, TABLE_ROWS).map((a) => el("tr", {},
          el("td", { class: "mono" }, a.epc), el("td", {}, a.loan || "-"),
          el("td", { title: fmtTime(a.last_seen) }, fmtAge(a.last_seen)), el("td", { class: "num" }, fmtKg(a.est_weight_kg)),
          el("td", {}, a.health === undefined || a.health === null ? "-"
            : String(a.health)))), animals.length) : null);
  }

  function renderStock(body, inv) {
    const lots = itemsOf(inv, "lots");
    if (!lots.length && !num(inv.ledger_kg) && !num(inv.in_kg) && !num(inv.out_kg)) {
      return fill(body, muted("No lots pledged at this site."));
    }
    const pledged = lots.reduce((sum, l) => sum + (num(l.pledged_kg) || 0), 0);
    const ledger = num(inv.ledger_kg);
    fill(body,
      el("p", { class: "big" }, `Ledger ${fmtKg(ledger)} vs pledged ${fmtKg(pledged)}`),
      bar(ledger || 0, pledged, ledger !== null && ledger < pledged),
      el("p", { class: "muted" }, `opening ${fmtKg(inv.opening_kg)}, in ${fmtKg(inv.in_kg)}, ` +
        `out ${fmtKg(inv.out_kg)}`),
      table(["Lot", "Commodity", "Pledged"], lots.slice(0, TABLE_ROWS).map((l) => el("tr", {},
        el("td", {}, l.lot), el("td", {}, l.commodity), el("td", { class: "num" },
          fmtKg(l.pledged_kg)))), lots.length));
  }

  function renderTickets(body, data) {
    const tickets = itemsOf(data, "tickets");
    if (!tickets.length) return fill(body, muted("No weigh tickets."));
    const time = (t) => t.out_ms ?? t.out_at ?? t.in_ms ?? t.in_at ?? t.ts;
    const sorted = tickets.slice().sort((a, b) =>
      (toDate(time(b)) || 0) - (toDate(time(a)) || 0));
    fill(body, table(["Out", "Truck", "Dir.", "Gross", "Tare", "Net"],
      sorted.slice(0, TABLE_ROWS).map((t) => el("tr", {},
        el("td", {}, fmtTime(time(t))), el("td", {}, t.truck_id || "-"),
        el("td", {}, t.direction || "-"), el("td", { class: "num" }, fmtKg(t.gross_kg)),
        el("td", { class: "num" }, fmtKg(t.tare_kg)),
        el("td", { class: "num" }, fmtKg(t.net_kg)))), tickets.length));
  }

  function renderDevices(body, data) {
    const devices = itemsOf(data, "devices");
    if (!devices.length) return fill(body, muted("No devices have reported yet."));
    const rank = (d) => (d.online === false ? 0 : d.online === null ? 1 : 2);
    const sorted = devices.slice().sort((a, b) => rank(a) - rank(b) ||
      String(a.device_id).localeCompare(String(b.device_id)));
    fill(body, table(["", "Device", "Kind", "Last seen"], sorted.slice(0, TABLE_ROWS).map((d) => {
      const s = d.online === true ? "online" : d.online === false ? "offline" : "unknown";
      return el("tr", { "data-device": d.device_id },
        el("td", {}, el("span", { class: `light ${s}`, title: s }), " ", s),
        el("td", { class: "mono" }, d.device_id), el("td", {}, d.kind || "-"),
        el("td", { title: fmtTime(d.last_seen_ms) }, fmtAge(d.last_seen_ms)));
    }), devices.length));
  }

  // ---------------------------------------------------------------- map (plain SVG canvas)

  function latLon(p) {
    if (Array.isArray(p) && p.length >= 2) return [num(p[0]), num(p[1])];
    if (p && typeof p === "object") return [num(p.lat), num(p.lon ?? p.lng)];
    return [null, null];
  }

  function renderMap(body, data) {
    const positions = itemsOf(data, "positions")
      .map((p) => ({ device: String(p.device_id ?? p.device ?? "?"), ll: latLon(p),
        t: toDate(p.ts_ms ?? p.ts ?? p.at) }))
      .filter((p) => p.ll[0] !== null && p.ll[1] !== null);
    const fences = (data && Array.isArray(data.geofences) ? data.geofences : [])
      .map((g) => ({ name: String(g.name ?? ""),
        pts: (Array.isArray(g.points) ? g.points : g.polygon && Array.isArray(g.polygon.points)
          ? g.polygon.points : Array.isArray(g.polygon) ? g.polygon : []).map(latLon)
          .filter(([a, b]) => a !== null && b !== null) }))
      .filter((g) => g.pts.length >= 3);
    const all = positions.map((p) => p.ll).concat(...fences.map((g) => g.pts));
    if (!positions.length && !fences.length) return fill(body, muted("No positions reported."));
    // equirectangular projection around the middle latitude: fine for a site-sized area
    const lats = all.map((p) => p[0]), lons = all.map((p) => p[1]);
    const midLat = (Math.min(...lats) + Math.max(...lats)) / 2;
    const kx = Math.cos((midLat * Math.PI) / 180);
    const xs = lons.map((v) => v * kx);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...lats), y1 = Math.max(...lats);
    const span = Math.max(x1 - x0, y1 - y0, 1e-4) * 1.25; // room for labels
    const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
    x0 = cx - span / 2; x1 = cx + span / 2; y0 = cy - span / 2; y1 = cy + span / 2;
    const S = 400;
    const px = ([lat, lon]) => [((lon * kx - x0) / (x1 - x0)) * S,
      (1 - (lat - y0) / (y1 - y0)) * S];
    const pts = (list) => list.map((p) => px(p).map((v) => v.toFixed(1)).join(",")).join(" ");
    const byDevice = new Map();
    for (const p of positions) {
      if (!byDevice.has(p.device)) byDevice.set(p.device, []);
      byDevice.get(p.device).push(p);
    }
    const metres = span * 111320; // metres per degree of latitude (mean, WGS84)
    const tracks = [...byDevice.entries()].map(([device, list], i) => {
      list.sort((a, b) => (a.t || 0) - (b.t || 0));
      const last = px(list[list.length - 1].ll);
      return svg("g", { class: `track c${i % 6}`, "data-device": device },
        list.length > 1 && svg("polyline", { points: pts(list.map((p) => p.ll)) }),
        svg("circle", { cx: last[0].toFixed(1), cy: last[1].toFixed(1), r: 4 },
          svg("title", {}, `${device} at ${fmtTime(list[list.length - 1].t)}`)),
        svg("text", { x: (last[0] + (last[0] > S * 0.7 ? -6 : 6)).toFixed(1),
          y: (last[1] - 6).toFixed(1), "text-anchor": last[0] > S * 0.7 ? "end" : "start" },
        device));
    });
    fill(body, svg("svg", { viewBox: `0 0 ${S} ${S}`, class: "map", role: "img",
      "aria-label": "positions and geofences" },
    svg("rect", { x: 0, y: 0, width: S, height: S, class: "ground" }),
    fences.map((g) => svg("g", { class: "fence" },
      svg("polygon", { points: pts(g.pts) }),
      svg("text", { x: px(g.pts[0])[0].toFixed(1), y: (px(g.pts[0])[1] - 4).toFixed(1) }, g.name))),
    tracks,
    svg("text", { x: 6, y: S - 6, class: "tick" }, `${fmtNum(metres)} m across, north up`)),
    muted(`${positions.length} fixes from ${byDevice.size} device(s), ` +
          `${fences.length} geofence(s)${data && data.truncated ? " (older fixes only: " +
          "more pages left)" : ""}`));
  }

  // ---------------------------------------------------------------- start

  window.addEventListener("unhandledrejection", (e) => {
    console.error("unhandled", e.reason); // a bug must not blank the page; keep it visible
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("alert-detail-close").addEventListener("click", () => {
      state.detailId = null;
      $("alert-detail").hidden = true;
    });
    // a link may carry the token in its fragment (never sent to the server, so never in a
    // log): #token=pw_... fills the form and is wiped from the address bar at once
    const fromLink = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromLink) {
      history.replaceState(null, "", location.pathname + location.search);
      $("token").value = fromLink;
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin();
      $("login-form").requestSubmit();
      return;
    }
    state.token = sessionStorage.getItem(TOKEN_KEY);
    if (state.token) startApp();
    else showLogin();
  });
})();
