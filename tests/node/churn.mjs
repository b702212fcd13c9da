#!/usr/bin/env node
// Official @microsoft/signalr clients under node churn: the client side of tests/e2e/churn.py.
//
// One process holds a fleet of clients (stateful WebSockets, plain clients on every transport
// and protocol), all with automatic reconnect. On every (re)connect a client invokes
// Join(group) and Whoami(); it invokes Echo(n) one call at a time in a loop; it records every
// Tick(seq) and NodeTick(seq) the server pushes (two publishers, two numberings). The Python harness kills and restarts nodes meanwhile and
// counts, from the JSON lines printed here, what each client lost, got twice or failed.
//
// Usage: node churn.mjs [--timeout MS] [--log-level L]
//   --timeout   bound for the whole process (default 120000): it prints
//               {"event":"timeout"} and exits with code 2 when it fires
//
// Commands (stdin), each {"id": N, "op": OP, ...}; every command gets exactly one reply
// {"id": N, "ok": VALUE, "ms": M} or {"id": N, "error": TEXT, "ms": M}:
//   start {url, group, clients: [{name, transport, protocol, stateful}], reconnect: [ms...],
//          echoIntervalMs?, echoTimeoutMs?, maxEchoes?, serverTimeoutMs?, keepAliveMs?}
//          -> {name: connectionId} once every client is connected and has joined the group
//             (an error when one could not); the echo loops start then
//   status {}  -> {name: {state, connectionId, lastSeq, received, lastNodeSeq}}
//   finish {settleMs?} -> stops the echo loops, waits (bounded) for the calls in flight, prints
//          the pending ticks, and answers {name: {state, connectionId, sockets, echo: {sent,
//          ok, failed: [[n, error, epoch ms]], maxMs, pending}}}
//   exit   -> stops every connection and exits 0
// Events (stdout), each with "t" (epoch ms) and "conn" (the client's name):
//   {"event":"conn","kind":"connected"|"reconnecting"|"reconnected"|"closed",
//    "connectionId"?, "error"?}                     the HubConnection's life cycle
//   {"event":"joined","connectionId","pid","why"}   Join and Whoami answered after a
//                                                   (re)connect ("why": connected|reconnected)
//   {"event":"join-failed","error","why"}
//   {"event":"where","connectionId","pid","n"}      Whoami after WebSocket n opened while the
//                                                   HubConnection stayed connected: a
//                                                   stateful resume, and the node it reached
//   {"event":"socket","kind":"open"|"close"|"error","n","code"?,"reason"?,"error"?}
//                                                   every WebSocket of a client (n counts them)
//   {"event":"ticks","seqs":[...],"at":[...]}       Tick(seq) pushes, batched, in arrival order
//   {"event":"nticks","seqs":[...],"at":[...]}      NodeTick(seq) pushes, the same way
//   {"event":"echo-failed","n","error"}             an Echo that errored or never answered
// Library log lines go to stderr.

import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

// The WebSocket implementation the client uses in Node; wrapped to see each socket come and go.
const require = createRequire(import.meta.url);
const WebSocketImpl = require("ws");

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const timeoutMs = Number(option("--timeout", "120000"));
const logLevelName = option("--log-level", process.env.SIGNALR_LOG_LEVEL || "Warning");
const FLUSH_MS = 50;

// ---------------------------------------------------------------- output

function out(obj) {
  process.stdout.write(JSON.stringify({ ...obj, t: obj.t ?? Date.now() }) + "\n");
}

function errorText(err) {
  if (err === undefined || err === null) return null;
  return err instanceof Error ? err.message : String(err);
}

const logger = {
  log(level, message) {
    const min = signalR.LogLevel[logLevelName] ?? signalR.LogLevel.Warning;
    if (level >= min) process.stderr.write(`[${new Date().toISOString()}] ${signalR.LogLevel[level]}: ${message}\n`);
  },
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function within(promise, ms, label) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${label}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------- clients

const clients = new Map(); // name -> client state
let config = null;

function tracedWebSocket(c) {
  return class TracedWebSocket extends WebSocketImpl {
    constructor(url, protocols, options) {
      super(url, protocols, options);
      const n = ++c.sockets;
      this.on("open", () => {
        out({ event: "socket", conn: c.name, kind: "open", n });
        // A new socket while the HubConnection stayed connected is a stateful resume: ask
        // where it landed (the call waits in the client's buffer until the resume is done).
        if (n > 1 && !c.reconnecting) setTimeout(() => locate(c, n), 100);
      });
      this.on("close", (code, reason) => {
        out({ event: "socket", conn: c.name, kind: "close", n, code, reason: String(reason || "") });
      });
      this.on("error", (e) => out({ event: "socket", conn: c.name, kind: "error", n, error: errorText(e) }));
    }
  };
}

async function locate(c, n) {
  try {
    const who = await within(c.conn.invoke("Whoami"), 10000, "Whoami");
    out({ event: "where", conn: c.name, connectionId: who.connectionId, pid: who.pid, n });
  } catch (e) {
    // The resume failed: the life-cycle events tell what happened next.
  }
}

async function joinAndLocate(c, why) {
  try {
    await within(c.conn.invoke("Join", config.group), 10000, "Join");
    const who = await within(c.conn.invoke("Whoami"), 10000, "Whoami");
    out({ event: "joined", conn: c.name, connectionId: who.connectionId, pid: who.pid, why });
    return true;
  } catch (e) {
    out({ event: "join-failed", conn: c.name, error: errorText(e), why });
    return false;
  }
}

function flushTicks() {
  for (const c of clients.values()) {
    if (c.seqs.length) {
      out({ event: "ticks", conn: c.name, seqs: c.seqs, at: c.at });
      c.seqs = [];
      c.at = [];
    }
    if (c.nseqs.length) {
      out({ event: "nticks", conn: c.name, seqs: c.nseqs, at: c.nat });
      c.nseqs = [];
      c.nat = [];
    }
  }
}

async function startClient(spec) {
  const c = {
    name: spec.name,
    spec,
    conn: null,
    sockets: 0,
    reconnecting: false,
    seqs: [],
    at: [],
    lastSeq: 0,
    received: 0,
    nseqs: [],
    nat: [],
    lastNodeSeq: 0,
    running: true,
    loop: null,
    echo: { sent: 0, ok: 0, failed: [], maxMs: 0, pending: 0 },
  };
  clients.set(spec.name, c);
  const transport = signalR.HttpTransportType[spec.transport || "WebSockets"];
  if (transport === undefined) throw new Error(`unknown transport ${spec.transport}`);
  const http = { transport };
  if (transport === signalR.HttpTransportType.WebSockets) http.WebSocket = tracedWebSocket(c);
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(config.url, http)
    .withAutomaticReconnect(config.reconnect);
  if (spec.stateful) builder = builder.withStatefulReconnect();
  const protocol = spec.protocol || "json";
  if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  else if (protocol !== "json") throw new Error(`unknown protocol ${protocol}`);
  if (config.serverTimeoutMs) builder = builder.withServerTimeout(config.serverTimeoutMs);
  if (config.keepAliveMs) builder = builder.withKeepAliveInterval(config.keepAliveMs);
  const conn = builder.configureLogging(logger).build();
  c.conn = conn;
  conn.on("Tick", (seq) => {
    c.seqs.push(seq);
    c.at.push(Date.now());
    c.received += 1;
    if (seq > c.lastSeq) c.lastSeq = seq;
  });
  conn.on("NodeTick", (seq) => {
    c.nseqs.push(seq);
    c.nat.push(Date.now());
    if (seq > c.lastNodeSeq) c.lastNodeSeq = seq;
  });
  conn.onreconnecting((e) => {
    c.reconnecting = true;
    out({ event: "conn", conn: c.name, kind: "reconnecting", error: errorText(e) });
  });
  conn.onreconnected((id) => {
    c.reconnecting = false;
    out({ event: "conn", conn: c.name, kind: "reconnected", connectionId: id });
    joinAndLocate(c, "reconnected");
  });
  conn.onclose((e) => {
    c.reconnecting = false;
    out({ event: "conn", conn: c.name, kind: "closed", error: errorText(e) });
  });
  await conn.start();
  out({ event: "conn", conn: c.name, kind: "connected", connectionId: conn.connectionId });
  if (!(await joinAndLocate(c, "connected"))) throw new Error(`${c.name} could not join`);
  return conn.connectionId;
}

async function echoLoop(c) {
  const { echoIntervalMs = 100, echoTimeoutMs = 10000, maxEchoes = 100000 } = config;
  while (c.running && c.echo.sent < maxEchoes) {
    if (c.conn.state !== signalR.HubConnectionState.Connected) {
      await sleep(50);
      continue;
    }
    const n = ++c.echo.sent;
    const started = Date.now();
    c.echo.pending = n;
    try {
      const got = await within(c.conn.invoke("Echo", n), echoTimeoutMs, "Echo");
      if (got === n) c.echo.ok += 1;
      else {
        c.echo.failed.push([n, `wrong answer ${JSON.stringify(got)}`, started]);
        out({ event: "echo-failed", conn: c.name, n, error: `wrong answer ${JSON.stringify(got)}` });
      }
    } catch (e) {
      c.echo.failed.push([n, errorText(e), started]);
      out({ event: "echo-failed", conn: c.name, n, error: errorText(e) });
    }
    c.echo.pending = 0;
    c.echo.maxMs = Math.max(c.echo.maxMs, Date.now() - started);
    await sleep(echoIntervalMs);
  }
}

async function start(cmd) {
  if (config) throw new Error("started already");
  config = {
    reconnect: [0, 200, 500, 1000, 1000, 2000, 2000, 2000, 2000, 2000, 2000, 2000],
    ...cmd,
  };
  const specs = cmd.clients || [];
  const results = await Promise.allSettled(specs.map((s) => startClient(s)));
  const failed = results
    .map((r, i) => [specs[i].name, r])
    .filter(([, r]) => r.status === "rejected")
    .map(([name, r]) => `${name}: ${errorText(r.reason)}`);
  if (failed.length) throw new Error(`clients did not start: ${failed.join("; ")}`);
  for (const c of clients.values()) c.loop = echoLoop(c);
  return Object.fromEntries([...clients.values()].map((c) => [c.name, c.conn.connectionId]));
}

function status() {
  return Object.fromEntries(
    [...clients.values()].map((c) => [
      c.name,
      {
        state: c.conn ? c.conn.state : "None",
        connectionId: c.conn ? c.conn.connectionId : null,
        lastSeq: c.lastSeq,
        received: c.received,
        lastNodeSeq: c.lastNodeSeq,
      },
    ]),
  );
}

async function finish(cmd) {
  for (const c of clients.values()) c.running = false;
  const settle = cmd.settleMs ?? (config?.echoTimeoutMs ?? 10000) + 1000;
  await Promise.race([Promise.allSettled([...clients.values()].map((c) => c.loop)), sleep(settle)]);
  flushTicks();
  return Object.fromEntries(
    [...clients.values()].map((c) => [
      c.name,
      {
        state: c.conn ? c.conn.state : "None",
        connectionId: c.conn ? c.conn.connectionId : null,
        sockets: c.sockets,
        echo: c.echo,
      },
    ]),
  );
}

async function stopAll(ms) {
  for (const c of clients.values()) c.running = false;
  const stops = [...clients.values()].filter((c) => c.conn).map((c) => c.conn.stop().catch(() => {}));
  await Promise.race([Promise.all(stops), sleep(ms)]);
}

async function run(cmd) {
  switch (cmd.op) {
    case "start": return start(cmd);
    case "status": return status();
    case "finish": return finish(cmd);
    default: throw new Error(`unknown op ${cmd.op}`);
  }
}

// ---------------------------------------------------------------- main

let exiting = false;

async function exit(code) {
  if (exiting) return;
  exiting = true;
  flushTicks();
  await stopAll(2000);
  process.exit(code);
}

const flusher = setInterval(flushTicks, FLUSH_MS);

const globalTimer = setTimeout(() => {
  flushTicks();
  out({ event: "timeout", timeoutMs });
  process.exit(2);
}, timeoutMs);

process.on("unhandledRejection", (reason) => {
  process.stderr.write(`unhandledRejection: ${errorText(reason)}\n`);
});

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  if (!line.trim()) return;
  let cmd;
  try {
    cmd = JSON.parse(line);
  } catch (e) {
    out({ event: "bad-command", error: errorText(e), line });
    return;
  }
  if (cmd.op === "exit") {
    clearTimeout(globalTimer);
    clearInterval(flusher);
    out({ id: cmd.id, ok: null, ms: 0 });
    exit(0);
    return;
  }
  const started = Date.now();
  Promise.resolve()
    .then(() => run(cmd))
    .then(
      (value) => out({ id: cmd.id, ok: value, ms: Date.now() - started }),
      (e) => out({ id: cmd.id, error: errorText(e) ?? "error", ms: Date.now() - started }),
    );
});
// The test went away: do not linger.
lines.on("close", () => {
  clearTimeout(globalTimer);
  clearInterval(flusher);
  exit(0);
});
