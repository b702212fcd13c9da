#!/usr/bin/env node
// Scenario driver for the hubplane end-to-end tests.
//
// It runs short JS scenarios that use the official @microsoft/signalr client exactly as an
// application would, and prints what they observe as JSON lines on stdout, one object per
// line, for a Python test to assert on.
//
// Usage:
//   node client.mjs [--url URL] [--transport T] [--protocol P] [--timeout MS]
//                   [--scenario-timeout MS] [--params JSON] [--log-level L]
//                   [--spec FILE] (SCENARIO.mjs | -e CODE | --name NAME ...)...
//
//   URL        hub URL, e.g. http://127.0.0.1:8000/hubs/e2e (env HUB_URL)
//   T          WebSockets | ServerSentEvents | LongPolling (env TRANSPORT, default WebSockets);
//              several joined with "," let the client fall back in the server's order
//   P          json | messagepack (env PROTOCOL, default json)
//   --timeout  global bound for the whole process in ms (env TIMEOUT_MS, default 30000):
//              when it fires the driver prints {"status":"timeout"} and exits with code 2
//   --spec     a JSON file {url, transport, protocol, timeoutMs, scenarioTimeoutMs, params,
//              logLevel, scenarios: [{name, code | file, timeoutMs}]}
//
// A scenario is either a module whose default export is an async function, or inline code
// that becomes the body of an async function. Both receive one context object:
//   { signalR, MessagePackHubProtocol, url, transport, protocol, params,
//     makeConnection(opts), connect(opts), log(tag, value) | log(obj), sleep(ms),
//     deferred(), within(promise, ms, label), errorText(err), record(conn, ...methods) }
// Scenarios of one process run one after another; connections a scenario created are
// stopped when it ends. Output lines:
//   {"scenario": NAME, "tag": TAG, "value": VALUE}            from log(tag, value)
//   {"scenario": NAME, "status": "ok" | "error", "error"?, "ms"}  when a scenario ends
//   {"status": "done", "failed": N} | {"status": "timeout"}   at the end
// Exit code: 0 when every scenario ended "ok", 1 otherwise, 2 on the global timeout.

import { readFileSync } from "node:fs";
import { resolve as resolvePath } from "node:path";
import { pathToFileURL } from "node:url";
import * as signalR from "@microsoft/signalr";
import { MessagePackHubProtocol } from "@microsoft/signalr-protocol-msgpack";

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const cfg = {
    url: process.env.HUB_URL || "",
    transport: process.env.TRANSPORT || "WebSockets",
    protocol: process.env.PROTOCOL || "json",
    timeoutMs: Number(process.env.TIMEOUT_MS || 30000),
    scenarioTimeoutMs: Number(process.env.SCENARIO_TIMEOUT_MS || 0),
    logLevel: process.env.SIGNALR_LOG_LEVEL || "Warning",
    params: process.env.SCENARIO_PARAMS ? JSON.parse(process.env.SCENARIO_PARAMS) : {},
    scenarios: [],
  };
  let pendingName = null;
  const next = (i) => {
    if (i + 1 >= argv.length) throw new Error(`missing value after ${argv[i]}`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    switch (a) {
      case "--url": cfg.url = next(i); i++; break;
      case "--transport": cfg.transport = next(i); i++; break;
      case "--protocol": cfg.protocol = next(i); i++; break;
      case "--timeout": cfg.timeoutMs = Number(next(i)); i++; break;
      case "--scenario-timeout": cfg.scenarioTimeoutMs = Number(next(i)); i++; break;
      case "--log-level": cfg.logLevel = next(i); i++; break;
      case "--params": cfg.params = JSON.parse(next(i)); i++; break;
      case "--name": pendingName = next(i); i++; break;
      case "--spec": {
        const spec = JSON.parse(readFileSync(next(i), "utf8"));
        i++;
        for (const key of ["url", "transport", "protocol", "timeoutMs", "scenarioTimeoutMs", "logLevel", "params"]) {
          if (spec[key] !== undefined && spec[key] !== null) cfg[key] = spec[key];
        }
        for (const s of spec.scenarios || []) cfg.scenarios.push(s);
        break;
      }
      case "-e": {
        cfg.scenarios.push({ name: pendingName || `inline${cfg.scenarios.length}`, code: next(i) });
        pendingName = null;
        i++;
        break;
      }
      default: {
        if (a.startsWith("--")) throw new Error(`unknown option ${a}`);
        cfg.scenarios.push({ name: pendingName || a, file: a });
        pendingName = null;
      }
    }
  }
  return cfg;
}

// ---------------------------------------------------------------- output

function jsonReplacer(_key, value) {
  if (value === undefined) return { $undefined: true };
  if (value instanceof Uint8Array || (typeof Buffer !== "undefined" && Buffer.isBuffer(value))) {
    return { $bytes: Buffer.from(value).toString("hex") };
  }
  if (value instanceof ArrayBuffer) return { $bytes: Buffer.from(new Uint8Array(value)).toString("hex") };
  if (value instanceof Error) return { $error: value.message, name: value.name };
  if (value instanceof Date) return { $date: value.toISOString() };
  if (typeof value === "number" && !Number.isFinite(value)) return { $number: String(value) };
  if (typeof value === "bigint") return { $bigint: value.toString() };
  return value;
}

function emit(obj) {
  // One write per line so lines from one process never interleave.
  process.stdout.write(JSON.stringify(obj, jsonReplacer) + "\n");
}

function errorText(err) {
  if (err === undefined || err === null) return null;
  if (err instanceof Error) return err.message;
  return String(err);
}

// Library log lines go to stderr so stdout stays JSON only.
function makeLogger(level) {
  const min = typeof level === "number" ? level : signalR.LogLevel[level] ?? signalR.LogLevel.Warning;
  return {
    log(logLevel, message) {
      if (logLevel >= min) {
        process.stderr.write(`[${new Date().toISOString()}] ${signalR.LogLevel[logLevel]}: ${message}\n`);
      }
    },
  };
}

// ---------------------------------------------------------------- scenario context

function makeContext(cfg, scenarioName, tracked) {
  const log = (...args) => {
    const [tag, value] = args;
    if (args.length === 1 && typeof tag === "object" && tag !== null) {
      emit({ scenario: scenarioName, ...tag });
    } else {
      emit({ scenario: scenarioName, tag, value });
    }
  };

  // Build a HubConnection the way an application does. Options:
  //   url | path (appended to the origin of cfg.url) | query (object added to the URL)
  //   transport, protocol, skipNegotiation, accessTokenFactory, accessToken, headers,
  //   reconnect (true = default delays, array = delays, false/undefined = off),
  //   keepAliveMs, serverTimeoutMs, logLevel, timeout (HTTP timeout), withCredentials
  function makeConnection(opts = {}) {
    let url = opts.url || cfg.url;
    if (!url) throw new Error("no hub URL: pass --url or set HUB_URL");
    if (opts.path) url = new URL(opts.path, url).toString();
    if (opts.query) {
      const u = new URL(url);
      for (const [k, v] of Object.entries(opts.query)) u.searchParams.set(k, String(v));
      url = u.toString();
    }
    const transportName = opts.transport || cfg.transport;
    // One name, or several joined with "," or "|" (the client then tries them in the
    // server's order: transport fallback).
    let transport = 0;
    for (const name of String(transportName).split(/[,|]/)) {
      const bit = signalR.HttpTransportType[name.trim()];
      if (bit === undefined) throw new Error(`unknown transport ${name}`);
      transport |= bit;
    }
    const httpOptions = { transport };
    if (opts.skipNegotiation) httpOptions.skipNegotiation = true;
    if (opts.headers) httpOptions.headers = opts.headers;
    if (opts.accessTokenFactory) httpOptions.accessTokenFactory = opts.accessTokenFactory;
    else if (opts.accessToken) httpOptions.accessTokenFactory = () => opts.accessToken;
    if (opts.timeout !== undefined) httpOptions.timeout = opts.timeout;
    if (opts.withCredentials !== undefined) httpOptions.withCredentials = opts.withCredentials;

    let builder = new signalR.HubConnectionBuilder().withUrl(url, httpOptions);
    const protocol = opts.protocol || cfg.protocol;
    if (protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
    else if (protocol === "json") builder = builder.withHubProtocol(new signalR.JsonHubProtocol());
    else throw new Error(`unknown protocol ${protocol}`);
    if (opts.reconnect === true) builder = builder.withAutomaticReconnect();
    else if (Array.isArray(opts.reconnect)) builder = builder.withAutomaticReconnect(opts.reconnect);
    if (opts.keepAliveMs !== undefined) builder = builder.withKeepAliveInterval(opts.keepAliveMs);
    if (opts.serverTimeoutMs !== undefined) builder = builder.withServerTimeout(opts.serverTimeoutMs);
    builder = builder.configureLogging(makeLogger(opts.logLevel || cfg.logLevel));
    const conn = builder.build();
    tracked.push(conn);
    return conn;
  }

  async function connect(opts = {}) {
    const conn = makeConnection(opts);
    await conn.start();
    return conn;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function deferred() {
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  }

  // Bound any wait: rejects with "timeout: LABEL" after ms.
  function within(promise, ms, label = "wait") {
    let timer;
    const t = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timeout after ${ms} ms: ${label}`)), ms); });
    return Promise.race([Promise.resolve(promise), t]).finally(() => clearTimeout(timer));
  }

  // Record every call of the given client methods: returns an array of [method, ...args].
  function record(conn, ...methods) {
    const seen = [];
    for (const m of methods) conn.on(m, (...args) => { seen.push([m, ...args]); });
    return seen;
  }

  return {
    signalR, MessagePackHubProtocol, url: cfg.url, transport: cfg.transport, protocol: cfg.protocol,
    params: cfg.params, makeConnection, connect, log, sleep, deferred, within, errorText, record,
  };
}

async function loadScenario(s) {
  if (s.code !== undefined) {
    const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
    const body =
      "const {signalR, MessagePackHubProtocol, url, transport, protocol, params, makeConnection, connect, " +
      "log, sleep, deferred, within, errorText, record} = ctx;\n" + s.code;
    return new AsyncFunction("ctx", body);
  }
  const mod = await import(pathToFileURL(resolvePath(s.file)).href);
  if (typeof mod.default !== "function") throw new Error(`${s.file} has no default export function`);
  return mod.default;
}

async function stopAll(conns, ms) {
  const stops = conns.map((c) => c.stop().catch(() => {}));
  await Promise.race([Promise.all(stops), new Promise((r) => setTimeout(r, ms))]);
}

// ---------------------------------------------------------------- main

async function main() {
  let cfg;
  try {
    cfg = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`client.mjs: ${e.message}\n`);
    process.exit(64);
  }
  if (cfg.scenarios.length === 0) {
    process.stderr.write("client.mjs: no scenario given (a file, -e CODE or --spec FILE)\n");
    process.exit(64);
  }
  const globalTimer = setTimeout(() => {
    emit({ status: "timeout", timeoutMs: cfg.timeoutMs });
    process.exit(2);
  }, cfg.timeoutMs);

  // A stray rejection inside the client library must not kill the process silently.
  process.on("unhandledRejection", (reason) => {
    process.stderr.write(`unhandledRejection: ${errorText(reason)}\n`);
  });

  let failed = 0;
  for (const s of cfg.scenarios) {
    const tracked = [];
    const started = Date.now();
    const ctx = makeContext(cfg, s.name, tracked);
    const limit = s.timeoutMs || cfg.scenarioTimeoutMs || 0;
    try {
      const fn = await loadScenario(s);
      const run = fn(ctx);
      await (limit > 0 ? ctx.within(run, limit, `scenario ${s.name}`) : run);
      emit({ scenario: s.name, status: "ok", ms: Date.now() - started });
    } catch (e) {
      failed++;
      emit({ scenario: s.name, status: "error", error: errorText(e), stack: e && e.stack ? String(e.stack) : null, ms: Date.now() - started });
    }
    await stopAll(tracked, 2000);
  }
  clearTimeout(globalTimer);
  emit({ status: "done", failed });
  // Open sockets or timers of the library must not keep the process alive.
  process.exit(failed ? 1 : 0);
}

main();
