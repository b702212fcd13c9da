// Drives one headless Chromium for the browser tests (tests/e2e/browser.py), one command per
// line on stdin, one JSON reply per line on stdout:
//   {"id": 1, "op": "open", "page": "a", "url": "http://127.0.0.1:8000/"}
//   {"id": 1, "ok": true, "value": ...}   or   {"id": 1, "ok": false, "error": "..."}
// The browser is Debian's chromium (playwright-core launches the system executable: no browser
// is ever downloaded); each page gets a browser context of its own (separate storage, as two
// people would have). Console errors and uncaught page errors are kept per page.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.HUBPLANE_CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
  ],
});
const pages = new Map(); // name -> { context, page, errors: [] }

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function get(name) {
  const entry = pages.get(name);
  if (!entry) throw new Error(`no page ${name}`);
  return entry;
}

const ops = {
  async open({ page: name, url, width = 1200, height = 800 }) {
    const context = await browser.newContext({ viewport: { width, height } });
    const page = await context.newPage();
    const entry = { context, page, errors: [], console: [] };
    page.on("console", (msg) => {
      const line = `${msg.type()}: ${msg.text()}`;
      entry.console.push(line);
      if (msg.type() === "error") entry.errors.push(line);
    });
    page.on("pageerror", (err) => entry.errors.push(`pageerror: ${err.message}`));
    pages.set(name, entry);
    if (url) await page.goto(url);
    return true;
  },
  async goto({ page, url }) {
    await get(page).page.goto(url);
    return true;
  },
  async fill({ page, selector, text }) {
    await get(page).page.locator(selector).first().fill(text);
    return true;
  },
  async press({ page, selector, key }) {
    await get(page).page.locator(selector).first().press(key);
    return true;
  },
  async click({ page, selector }) {
    await get(page).page.locator(selector).first().click();
    return true;
  },
  // ``expression``: a JS expression evaluated in the page, waited for until truthy. Given as
  // a function (a string would be eval'ed in the page, which the pages' CSP forbids).
  async wait({ page, expression, timeout = 10000 }) {
    const predicate = new Function(`return (${expression});`);
    const handle = await get(page).page.waitForFunction(predicate, null, { timeout });
    return await handle.jsonValue();
  },
  async evaluate({ page, expression }) {
    return await get(page).page.evaluate(expression);
  },
  async text({ page, selector }) {
    return await get(page).page.locator(selector).first().innerText();
  },
  async screenshot({ page, path, fullPage = false }) {
    await get(page).page.screenshot({ path, fullPage });
    return path;
  },
  async errors({ page }) {
    return get(page).errors;
  },
  async console({ page }) {
    return get(page).console;
  },
  async close({ page }) {
    const entry = pages.get(page);
    if (entry) {
      pages.delete(page);
      await entry.context.close();
    }
    return true;
  },
  async version() {
    return browser.version();
  },
};

let queue = Promise.resolve();
const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (err) {
    reply({ ok: false, error: `bad command: ${err.message}` });
    return;
  }
  // one command at a time, in order
  queue = queue.then(async () => {
    try {
      const op = ops[command.op];
      if (!op) throw new Error(`unknown op ${command.op}`);
      reply({ id: command.id, ok: true, value: await op(command) });
    } catch (err) {
      reply({ id: command.id, ok: false, error: String(err && err.message ? err.message : err) });
    }
  });
});
rl.on("close", async () => {
  await queue;
  await browser.close();
  process.exit(0);
});
reply({ ready: true, version: browser.version() });
