// Smoke scenario for the built-in demo hub (hubplane serve without --hub):
//   node tests/node/client.mjs --url http://127.0.0.1:8000/hubs/demo tests/node/scenarios/demo-smoke.mjs
export default async function ({ connect, log, within, deferred }) {
  const a = await connect();
  const b = await connect();
  const got = deferred();
  b.on("ReceiveMessage", (user, text) => { got.resolve([user, text]); });
  log("echo", await a.invoke("Echo", { hello: "world" }));
  await a.invoke("SendMessage", "alice", "hi all");
  log("broadcast", await within(got.promise, 5000, "ReceiveMessage on b"));
  const items = [];
  await new Promise((resolve, reject) => {
    a.stream("Counter", 3, 0).subscribe({ next: (i) => { items.push(i); }, complete: resolve, error: reject });
  });
  log("stream", items);
}
