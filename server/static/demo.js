// The demo chat on the official SignalR browser client (window.signalR, from
// @microsoft/signalr's dist/browser/signalr.min.js). No framework: a few DOM helpers.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const hubPath = body.dataset.hub || "/hubs/demo";

  const setStatus = (text, kind) => {
    const el = $("status");
    el.textContent = text;
    el.className = "badge " + (kind || "");
    body.dataset.state = kind || text;
  };

  if (!window.signalR) {
    setStatus("no client", "error");
    const li = document.createElement("li");
    li.className = "system error";
    li.textContent =
      "The SignalR browser bundle is missing on this server: in a clone, run `make web-deps` " +
      "(needs Node.js with npm); wheels and the Docker image carry it.";
    $("log").appendChild(li);
    return;
  }
  const signalR = window.signalR;
  $("version").textContent = signalR.VERSION;

  // Short node ids for lists (the full id in the tooltip): host_0123abcd... -> host…abcd12
  const shortNode = (id) => {
    if (!id) return "?";
    const cut = id.lastIndexOf("_");
    return cut > 0 && id.length - cut > 8 ? id.slice(0, cut) + "…" + id.slice(-6) : id;
  };
  const nodeTag = (id, mine) => {
    const span = document.createElement("span");
    span.className = "node" + (mine ? " mine" : "");
    span.title = id || "";
    span.textContent = shortNode(id);
    return span;
  };

  const params = new URLSearchParams(location.search);
  const state = {
    name: params.get("name") || sessionStorage.getItem("hubplane.name") ||
      "guest-" + Math.floor(100 + Math.random() * 900),
    room: params.get("room") || sessionStorage.getItem("hubplane.room") || "lobby",
    node: null,
    connectionId: null,
    rooms: new Map(),
  };
  $("name").value = state.name;
  $("room").value = state.room;

  const log = $("log");
  const addLine = (li) => {
    log.appendChild(li);
    while (log.children.length > 500) log.removeChild(log.firstChild);
    log.scrollTop = log.scrollHeight;
  };
  const system = (text) => {
    const li = document.createElement("li");
    li.className = "system";
    li.textContent = text;
    addLine(li);
  };
  const said = (line) => {
    const li = document.createElement("li");
    const who = document.createElement("b");
    who.textContent = line.name || "?";
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = line.text;
    li.append(who, " ", nodeTag(line.node, line.node === state.node), " ", text);
    if (line.connectionId === state.connectionId) li.className = "own";
    addLine(li);
  };

  const renderMembers = (members) => {
    const ul = $("members");
    ul.replaceChildren();
    for (const m of members) {
      const li = document.createElement("li");
      const who = document.createElement("b");
      who.textContent = m.name || m.connectionId;
      li.append(who, " ", nodeTag(m.node, m.node === state.node));
      if (m.connectionId === state.connectionId) li.append(" (you)");
      ul.appendChild(li);
    }
    $("member-count").textContent = String(members.length);
  };
  const renderRooms = () => {
    const ul = $("rooms");
    ul.replaceChildren();
    for (const [room, count] of state.rooms) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = "#";
      link.textContent = "#" + room;
      link.addEventListener("click", (e) => {
        e.preventDefault();
        $("room").value = room;
        enter().catch(fail);
      });
      if (room === state.room) li.className = "current";
      li.append(link, " ", String(count));
      ul.appendChild(li);
    }
  };

  const connection = new signalR.HubConnectionBuilder()
    .withUrl(hubPath)
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.Warning)
    .build();

  connection.on("Said", said);
  connection.on("ReceiveMessage", (user, text) => said({ name: user, text: String(text) }));
  connection.on("Members", (room, members) => {
    if (room === state.room) renderMembers(members);
  });
  connection.on("RoomSize", (room, count) => {
    state.rooms.set(room, count);
    renderRooms();
  });
  connection.on("Joined", () => {});

  const fail = (err) => system("error: " + (err && err.message ? err.message : err));

  async function enter() {
    const name = $("name").value.trim() || state.name;
    const room = $("room").value.trim() || state.room;
    const reply = await connection.invoke("Enter", name, room);
    const moved = reply.room !== state.room || !state.connectionId;
    Object.assign(state, {
      name: reply.name, room: reply.room, node: reply.node, connectionId: reply.connectionId,
    });
    sessionStorage.setItem("hubplane.name", state.name);
    sessionStorage.setItem("hubplane.room", state.room);
    $("node").textContent = reply.node;
    $("room-title").textContent = reply.room;
    $("members-room").textContent = "#" + reply.room;
    $("transport").textContent = reply.transport;
    body.dataset.node = reply.node;
    for (const r of reply.rooms) state.rooms.set(r.room, r.members);
    renderRooms();
    renderMembers(reply.members);
    if (moved) system(`you are ${state.name} in #${state.room} on node ${reply.node}`);
    setStatus("connected", "connected");
  }

  connection.onreconnecting(() => setStatus("reconnecting", "reconnecting"));
  connection.onreconnected(() => enter().catch(fail));
  connection.onclose(() => setStatus("disconnected", "error"));

  $("send-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("message");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    connection.invoke("Say", text).catch(fail);
  });
  $("enter-form").addEventListener("submit", (e) => {
    e.preventDefault();
    enter().catch(fail);
  });

  setStatus("connecting", "connecting");
  connection.start().then(enter).catch((err) => {
    setStatus("disconnected", "error");
    fail(err);
  });
  window.hubplaneDemo = { connection, state };
})();
