// The cluster dashboard: polls the admin API (/_hubplane/...) with the token the user gave,
// kept in sessionStorage for this tab only. No framework, no build step.
"use strict";
(() => {
  const API = "/_hubplane";
  const PERIOD = 1500; // ms between updates
  const HISTORY = 80; // chart points (two minutes at PERIOD)
  const KEY = "hubplane.adminToken";
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const samples = []; // {in, out} per update, for the chart
  let timer = null;
  let updates = 0;

  // The token: from the fragment (#token=...), which never reaches a server or a log, then
  // out of the address bar; else from this tab's storage; else the form asks.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem(KEY, fragment.get("token"));
    window.history.replaceState(null, "", location.pathname + location.search);
  }

  const setStatus = (text, kind) => {
    const el = $("status");
    el.textContent = text;
    el.className = "badge " + (kind || "");
    body.dataset.state = kind || text;
  };

  const cell = (row, text, cls) => {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    row.appendChild(td);
    return td;
  };
  const fill = (table, rows) => {
    const tbody = $(table).tBodies[0];
    tbody.replaceChildren(...rows);
  };
  const fmt = (n) => (n >= 100 ? Math.round(n).toLocaleString("en") : String(Math.round(n * 10) / 10));
  const duration = (s) => {
    if (s < 60) return `${Math.floor(s)} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  };

  class Unauthorized extends Error {}

  async function get(path) {
    const response = await fetch(API + path, {
      headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY) },
      cache: "no-store",
    });
    if (response.status === 401) throw new Unauthorized("the token was refused");
    const data = await response.json();
    if (!response.ok) throw new Error(`${path}: ${response.status} ${data.error || ""}`);
    return data;
  }

  function showLogin(message) {
    clearTimeout(timer);
    $("panels").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").hidden = !message;
    $("login-error").textContent = message || "";
    setStatus("token needed", "warn");
    $("token").focus();
  }

  function renderNodes(nodes, figures, now) {
    const rows = nodes.map((n) => {
      const f = figures.get(n.id);
      const b = f ? f.backplane : null;
      const rate = (key) => (f ? fmt(f.hubs.reduce((sum, h) => sum + h[key], 0)) : "–");
      const tr = document.createElement("tr");
      tr.dataset.node = n.id;
      cell(tr, n.id, "id");
      cell(tr, String(n.connections), "num");
      cell(tr, n.started ? duration(now - n.started) : "–", "num");
      cell(tr, n.last_heartbeat ? `${fmt(Math.max(0, now - n.last_heartbeat))} s ago` : "–", "num");
      cell(tr, rate("rate_in"), "num");
      cell(tr, rate("rate_out"), "num");
      const health = cell(tr, "");
      const badge = document.createElement("span");
      if (!b) {
        badge.className = "badge";
        badge.textContent = "no figures";
      } else if (b.mode === "memory") {
        badge.className = "badge ok";
        badge.textContent = "in memory";
      } else {
        badge.className = "badge " + (b.connected ? "ok" : "bad");
        badge.textContent = b.connected ? "connected" : "disconnected";
        if (b.last_error && !b.connected) badge.title = b.last_error;
      }
      health.appendChild(badge);
      for (const key of ["queued", "buffered", "dropped", "reconnects"]) {
        cell(tr, b && b[key] !== undefined ? String(b[key]) : "–", "num");
      }
      return tr;
    });
    fill("nodes", rows);
  }

  function renderHubs(hubs, totals) {
    const rows = [];
    for (const hub of hubs) {
      const head = document.createElement("tr");
      head.className = "hub-row";
      const name = cell(head, `${hub.path}: ${hub.connections} connection${hub.connections === 1 ? "" : "s"}`, "mono");
      name.colSpan = 3;
      rows.push(head);
      const total = totals.get(hub.path);
      for (const s of total ? total.by_transport : []) {
        const tr = document.createElement("tr");
        cell(tr, s.transport);
        cell(tr, s.protocol);
        cell(tr, String(s.connections), "num");
        rows.push(tr);
      }
    }
    fill("hubs", rows);
  }

  function renderGroups(totals) {
    const rows = [];
    for (const total of totals.values()) {
      for (const g of total.groups) {
        const tr = document.createElement("tr");
        cell(tr, total.path, "mono");
        cell(tr, g.group);
        cell(tr, String(g.members), "num");
        rows.push(tr);
      }
    }
    rows.sort((a, b) => Number(b.lastChild.textContent) - Number(a.lastChild.textContent));
    if (!rows.length) {
      const tr = document.createElement("tr");
      cell(tr, "no groups yet", "muted").colSpan = 3;
      rows.push(tr);
    }
    fill("groups", rows.slice(0, 10));
  }

  function renderChart() {
    const svg = $("chart");
    const W = 400, H = 140, top = 12, bottom = 128;
    const peak = Math.max(1, ...samples.map((p) => Math.max(p.in, p.out)));
    const x = (i) => (W * i) / (HISTORY - 1);
    const y = (v) => bottom - ((bottom - top) * v) / peak;
    const offset = HISTORY - samples.length;
    const line = (key) => samples.map((p, i) => `${x(i + offset).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
    const ns = "http://www.w3.org/2000/svg";
    const make = (tag, attrs, text) => {
      const el = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      if (text !== undefined) el.textContent = text;
      return el;
    };
    svg.replaceChildren(
      make("line", { class: "grid", x1: 0, x2: W, y1: top, y2: top }),
      make("line", { class: "grid", x1: 0, x2: W, y1: bottom, y2: bottom }),
      make("text", { x: 2, y: top - 2 }, `${fmt(peak)}/s`),
      make("text", { x: 2, y: H - 2 }, "0"),
      make("polyline", { class: "in", points: line("in") }),
      make("polyline", { class: "out", points: line("out") }),
    );
  }

  async function update() {
    const [hubsReply, cluster] = await Promise.all([get("/hubs"), get("/cluster")]);
    const hubs = hubsReply.hubs;
    const perHub = await Promise.all(
      hubs.map((h) => get("/nodes?hub=" + encodeURIComponent(h.path))),
    );
    // one row per node, its connections over every hub
    const nodes = new Map();
    for (const reply of perHub) {
      for (const n of reply.nodes) {
        const seen = nodes.get(n.id);
        if (seen) seen.connections += n.connections;
        else nodes.set(n.id, { ...n });
      }
    }
    const figures = new Map(cluster.nodes.map((f) => [f.node, f]));
    const totals = new Map(cluster.hubs.map((h) => [h.path, h]));
    const now = cluster.time;
    const list = [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
    renderNodes(list, figures, now);
    renderHubs(hubs, totals);
    renderGroups(totals);

    const rateIn = cluster.hubs.reduce((s, h) => s + h.rate_in, 0);
    const rateOut = cluster.hubs.reduce((s, h) => s + h.rate_out, 0);
    samples.push({ in: rateIn, out: rateOut });
    while (samples.length > HISTORY) samples.shift();
    renderChart();

    const backplanes = cluster.nodes.map((f) => f.backplane);
    const up = backplanes.filter((b) => b.connected).length;
    $("kpi-nodes").textContent = String(list.length);
    $("kpi-connections").textContent = String(hubs.reduce((s, h) => s + h.connections, 0));
    $("kpi-in").textContent = fmt(rateIn);
    $("kpi-out").textContent = fmt(rateOut);
    $("kpi-redis").textContent = backplanes.some((b) => b.mode === "redis")
      ? `${up}/${backplanes.length} up`
      : "in memory";
    $("missing").hidden = !cluster.missing.length;
    $("missing").textContent = cluster.missing.length
      ? `No figures from ${cluster.missing.join(", ")} (its admin API is off, or it just started).`
      : "";

    updates += 1;
    body.dataset.updates = String(updates);
    body.dataset.nodes = list.map((n) => n.id).join(" ");
    body.dataset.connections = $("kpi-connections").textContent;
    $("updated").textContent = "updated " + new Date(now * 1000).toLocaleTimeString();
    setStatus("live", "ok");
  }

  async function loop() {
    try {
      await update();
      timer = setTimeout(loop, PERIOD);
    } catch (err) {
      if (err instanceof Unauthorized) {
        sessionStorage.removeItem(KEY);
        showLogin("The token was refused.");
        return;
      }
      setStatus("retrying: " + err.message, "warn");
      timer = setTimeout(loop, PERIOD * 2);
    }
  }

  function start() {
    $("login").hidden = true;
    $("panels").hidden = false;
    $("forget").hidden = false;
    setStatus("connecting", "warn");
    loop();
  }

  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(KEY, token);
    $("token").value = "";
    start();
  });
  $("forget").addEventListener("click", (e) => {
    e.preventDefault();
    sessionStorage.removeItem(KEY);
    showLogin("");
  });

  if (sessionStorage.getItem(KEY)) start();
  else showLogin("");
})();
