#!/usr/bin/env node
// A pool of official @microsoft/signalr clients driven over stdin, for the multi-node tests.
//
// The Python test is the conductor: it opens connections to any node of a cluster, makes
// them invoke hub methods, and watches what each one receives, one JSON object per line.
// Unlike client.mjs (a script runs to its end), this process waits for commands, so the
// test can act between steps: kill a node, stop Redis, call a HubContext in process.
//
// Usage: node cluster.mjs [--timeout MS] [--log-level L]
//   --timeout   bound for the whole process (default 60000): it prints
//               {"event":"timeout"} and exits with code 2 when it fires
//
// Commands (stdin), each {"id": N, "op": OP, ...}; every command gets exactly one reply
// {"id": N, "ok": VALUE, "ms": M} or {"id": N, "error": TEXT, "ms": M} (M = duration in ms):
//   connect {conn, url, protocol?, transport?, query?, on?: [methods], reconnect?,
//            skipNegotiation?, stateful?, answers?: {method: value | {"$error": text}}}
//                                                 -> the connection id; each answers entry
//            registers a handler that returns the value (a client result) or throws;
//            stateful: true builds the client withStatefulReconnect()
//   invoke  {conn, method, args}                  -> the result (error: the client's message)
//   send    {conn, method, args}                  -> null once the message is written
//   stop    {conn}                                -> null
//   state   {conn}                                -> "Connected" | "Disconnected" | ...
//   tickStart {conn, method, args, intervalMs, retry?} -> null; then every intervalMs it
//            invokes method with args, each "$seq" argument replaced by 1, 2, 3, ...; with
//            retry: N a failed invocation is sent again (up to N times) once the connection
//            is Connected again
//   tickMark  {conn}                              -> the last sequence number issued so far
//   tickStatus {conn}                             -> {issued, ok, errors, pending} (counts)
//   tickStop  {conn, settleMs?}                   -> {issued, ok: [seq], errors: [[seq, text]],
//            retried: [[seq, text]], issuedAt: [[seq, epoch ms]], pending} after waiting up
//            to settleMs for pending invocations
//   exit                                          -> stops every connection and exits 0
// Events (stdout), in the order the client saw them:
//   {"event":"message","conn","method","args"}     a server push to a registered method
//   {"event":"close","conn","error"}                {"event":"reconnecting","conn","error"}
//   {"event":"reconnected","conn","connectionId"}
// Library log lines go to stderr.

import { createInterface } from "node:readline";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

const DEFAULT_METHODS = ["Receive", "Tick", "Events"];

function option(name, fallback) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const timeoutMs = Number(option("--timeout", "60000"));
const logLevelName = option("--log-level", process.env.SIGNALR_LOG_LEVEL || "Warning");

// ---------------------------------------------------------------- output

function toJson(_key, value) {
  if (value === undefined) return { $undefined: true };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value).toString("hex") };
  if (value instanceof ArrayBuffer) return { $bytes: Buffer.from(new Uint8Array(value)).toString("hex") };
  if (typeof value === "bigint") return { $bigint: value.toString() };
  if (value instanceof Date) return { $date: value.toISOString() };
  return value;
}

function out(obj) {
  process.stdout.write(JSON.stringify(obj, toJson) + "\n");
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

// ---------------------------------------------------------------- connections

const conns = new Map(); // name -> HubConnection
const tickers = new Map(); // name -> ticker state

function get(name) {
  const c = conns.get(name);
  if (!c) throw new Error(`no connection named ${name}`);
  return c;
}

async function connect(cmd) {
  if (conns.has(cmd.conn)) throw new Error(`connection ${cmd.conn} exists already`);
  const url = new URL(cmd.url);
  for (const [k, v] of Object.entries(cmd.query || {})) url.searchParams.set(k, String(v));
  const transport = signalR.HttpTransportType[cmd.transport || "WebSockets"];
  if (transport === undefined) throw new Error(`unknown transport ${cmd.transport}`);
  const http = { transport };
  if (cmd.skipNegotiation) http.skipNegotiation = true;
  let builder = new signalR.HubConnectionBuilder().withUrl(url.toString(), http);
  const protocol = cmd.protocol || "json";
  if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  else if (protocol === "json") builder = builder.withHubProtocol(new signalR.JsonHubProtocol());
  else throw new Error(`unknown protocol ${protocol}`);
  if (cmd.stateful) builder = builder.withStatefulReconnect();
  if (cmd.reconnect === true) builder = builder.withAutomaticReconnect();
  else if (Array.isArray(cmd.reconnect)) builder = builder.withAutomaticReconnect(cmd.reconnect);
  const conn = builder.configureLogging(logger).build();
  const name = cmd.conn;
  for (const method of cmd.on || DEFAULT_METHODS) {
    conn.on(method, (...args) => out({ event: "message", conn: name, method, args }));
  }
  for (const [method, value] of Object.entries(cmd.answers || {})) {
    conn.on(method, (...args) => {
      out({ event: "asked", conn: name, method, args });
      if (value && typeof value === "object" && "$error" in value) throw new Error(value.$error);
      return value;
    });
  }
  conn.onclose((e) => out({ event: "close", conn: name, error: errorText(e) }));
  conn.onreconnecting((e) => out({ event: "reconnecting", conn: name, error: errorText(e) }));
  conn.onreconnected((id) => out({ event: "reconnected", conn: name, connectionId: id }));
  conns.set(name, conn);
  try {
    await conn.start();
  } catch (e) {
    conns.delete(name);
    throw e;
  }
  return conn.connectionId;
}

function substitute(args, seq) {
  return args.map((a) => (a === "$seq" ? seq : a));
}

const sleepMs = (ms) => new Promise((r) => setTimeout(r, ms));

// With retries, a failed invocation is sent again once the connection is back (as an
// application that retries its calls after a reconnect would), up to `retry` times.
async function invokeWithRetries(conn, t, cmd, seq) {
  const retries = cmd.retry || 0;
  for (let attempt = 0; ; attempt++) {
    try {
      await conn.invoke(cmd.method, ...substitute(cmd.args || [], seq));
      t.ok.push(seq);
      return;
    } catch (e) {
      if (attempt >= retries) {
        t.errors.push([seq, errorText(e)]);
        return;
      }
      t.retried.push([seq, errorText(e)]);
      // The hub connection may still say Connected while its transport is going away.
      await sleepMs(100);
      for (let i = 0; i < 200 && conn.state !== signalR.HubConnectionState.Connected; i++) {
        await sleepMs(50);
      }
    }
  }
}

function tickStart(cmd) {
  const conn = get(cmd.conn);
  if (tickers.has(cmd.conn)) throw new Error(`a ticker runs on ${cmd.conn} already`);
  const t = { seq: 0, ok: [], errors: [], retried: [], issuedAt: [], pending: new Set(), timer: null };
  t.timer = setInterval(() => {
    const seq = ++t.seq;
    t.issuedAt.push([seq, Date.now()]);
    const p = invokeWithRetries(conn, t, cmd, seq).finally(() => t.pending.delete(p));
    t.pending.add(p);
  }, cmd.intervalMs || 20);
  tickers.set(cmd.conn, t);
  return null;
}

async function tickStop(cmd) {
  const t = tickers.get(cmd.conn);
  if (!t) throw new Error(`no ticker on ${cmd.conn}`);
  clearInterval(t.timer);
  tickers.delete(cmd.conn);
  const settle = new Promise((r) => setTimeout(r, cmd.settleMs ?? 5000));
  await Promise.race([Promise.allSettled([...t.pending]), settle]);
  return {
    issued: t.seq,
    ok: [...t.ok].sort((a, b) => a - b),
    errors: t.errors,
    retried: t.retried,
    issuedAt: t.issuedAt,
    pending: t.pending.size,
  };
}

async function stopAll(ms) {
  for (const t of tickers.values()) clearInterval(t.timer);
  const stops = [...conns.values()].map((c) => c.stop().catch(() => {}));
  await Promise.race([Promise.all(stops), new Promise((r) => setTimeout(r, ms))]);
}

async function run(cmd) {
  switch (cmd.op) {
    case "connect": return connect(cmd);
    case "invoke": return get(cmd.conn).invoke(cmd.method, ...(cmd.args || []));
    case "send": await get(cmd.conn).send(cmd.method, ...(cmd.args || [])); return null;
    case "stop": await get(cmd.conn).stop(); return null;
    case "state": return get(cmd.conn).state;
    case "tickStart": return tickStart(cmd);
    case "tickMark": {
      const t = tickers.get(cmd.conn);
      if (!t) throw new Error(`no ticker on ${cmd.conn}`);
      return t.seq;
    }
    case "tickStatus": {
      const t = tickers.get(cmd.conn);
      if (!t) throw new Error(`no ticker on ${cmd.conn}`);
      return { issued: t.seq, ok: t.ok.length, errors: t.errors.length, pending: t.pending.size };
    }
    case "tickStop": return tickStop(cmd);
    default: throw new Error(`unknown op ${cmd.op}`);
  }
}

// ---------------------------------------------------------------- main

let exiting = false;

async function exit(code) {
  if (exiting) return;
  exiting = true;
  await stopAll(2000);
  process.exit(code);
}

const globalTimer = setTimeout(() => {
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
    out({ id: cmd.id, ok: null, ms: 0 });
    exit(0);
    return;
  }
  const started = Date.now();
  // Commands run concurrently: a slow invoke must not hold up the others.
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
  exit(0);
});
