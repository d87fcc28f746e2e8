// The spore web UI: plain ES module, no build step, no network but the
// node's own API. The token is kept in localStorage and sent as a bearer
// header; media plays from the gateway (/b/{id}), which needs no token.

const $ = (id) => document.getElementById(id);
let token = localStorage.getItem("spore-token") || "";
const names = new Map(JSON.parse(localStorage.getItem("spore-names") || "[]"));

function remember(id, name) {
  if (!name) return;
  names.set(id, name);
  localStorage.setItem("spore-names", JSON.stringify([...names].slice(-200)));
}

async function api(method, path, body, raw) {
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (raw !== undefined) {
    init.body = raw;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin("the token was refused");
    throw new Error("unauthorized");
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new Error(json?.error?.message || `${res.status}`);
  return json;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function showLogin(message) {
  $("login").hidden = false;
  $("app").hidden = true;
  $("login-error").textContent = message || "";
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function play(id) {
  const name = names.get(id);
  const src = `/b/${id}` + (name ? `?filename=${encodeURIComponent(name)}` : "");
  $("player-section").hidden = false;
  $("player").src = src;
  $("player-link").href = src;
  $("player").play().catch(() => {});
}

let last = null;
async function refreshStatus() {
  const s = await api("GET", "/v1/status");
  $("peer-id").textContent = s.peer_id;
  $("peer-count").textContent = s.connected_peers;
  const now = performance.now();
  if (last) {
    const dt = (now - last.t) / 1000;
    $("rate-down").textContent = `${bytes(Math.max(0, s.downloaded_bytes - last.down) / dt)}/s`;
    $("rate-up").textContent = `${bytes(Math.max(0, s.uploaded_bytes - last.up) / dt)}/s`;
  }
  last = { t: now, down: s.downloaded_bytes, up: s.uploaded_bytes };
}

async function refreshDownloads() {
  const list = await api("GET", "/v1/downloads");
  const body = $("downloads").tBodies[0];
  body.replaceChildren(...list.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    tr.dataset.state = d.state;
    tr.append(cell(names.get(d.id) || d.id.slice(0, 16) + "…"));
    const bar = document.createElement("progress");
    bar.max = d.size || 1;
    bar.value = d.size ? d.verified_bytes : 0;
    const pct = d.size ? Math.floor((100 * d.verified_bytes) / d.size) : 0;
    const td = document.createElement("td");
    const label = document.createElement("span");
    label.className = "pct";
    label.textContent = `${pct}%`;
    td.append(bar, " ", label);
    tr.append(td, cell(`${bytes(d.rate)}/s`), cell(String(d.peers)), cell(d.error ? `${d.state}: ${d.error}` : d.state));
    const actions = document.createElement("td");
    const playBtn = document.createElement("button");
    playBtn.textContent = "Play";
    playBtn.className = "play";
    playBtn.onclick = () => play(d.id);
    actions.append(playBtn);
    if (d.state === "starting" || d.state === "downloading") {
      const cancel = document.createElement("button");
      cancel.textContent = "Cancel";
      cancel.onclick = () => api("DELETE", `/v1/downloads/${d.id}`).then(refreshDownloads);
      actions.append(" ", cancel);
    }
    tr.append(actions);
    return tr;
  }));
}

async function refreshPeers() {
  const peers = await api("GET", "/v1/peers");
  $("peers").tBodies[0].replaceChildren(...peers.map((p) => {
    const tr = document.createElement("tr");
    tr.append(
      cell(p.peer_id),
      cell(p.connections[0]?.remote_addr || ""),
      cell(p.latency_ms == null ? "" : `${p.latency_ms.toFixed(1)} ms`),
      cell(p.agent_version || ""),
    );
    return tr;
  }));
}

function shared(added) {
  remember(added.id, added.name);
  const li = document.createElement("li");
  const code = document.createElement("code");
  code.textContent = added.ticket;
  const btn = document.createElement("button");
  btn.textContent = "Play";
  btn.onclick = () => play(added.id);
  li.append(`${added.name} (${bytes(added.size)}) `, btn, document.createElement("br"), code);
  $("shares").prepend(li);
}

async function tick() {
  try {
    await Promise.all([refreshStatus(), refreshDownloads(), refreshPeers()]);
  } catch (e) {
    if (e.message !== "unauthorized") console.warn(e);
  }
}

// Live updates: /v1/events read with fetch (EventSource cannot send the
// token). A download or peer event refreshes its table at once; the 1 s
// poll stays as the fallback. Reconnects with Last-Event-ID.
let lastEventId = null;
let eventsRunning = false;
const pending = new Set();
function soon(what) {
  if (pending.has(what)) return;
  pending.add(what);
  setTimeout(() => { pending.delete(what); what().catch(() => {}); }, 150);
}
async function followEvents() {
  if (eventsRunning) return;
  eventsRunning = true;
  while (token && !$("app").hidden) {
    try {
      const headers = { Authorization: `Bearer ${token}` };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const res = await fetch("/v1/events", { headers });
      if (!res.ok) throw new Error(`${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let kind = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) lastEventId = line.slice(4);
            if (line.startsWith("event: ")) kind = line.slice(7);
          }
          if (kind === "download") soon(refreshDownloads);
          if (kind.startsWith("peer_")) { soon(refreshPeers); soon(refreshStatus); }
          if (kind === "lagged") { soon(refreshDownloads); soon(refreshPeers); }
        }
      }
    } catch (e) {
      console.warn("events:", e.message);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
  eventsRunning = false;
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  tick();
  followEvents();
}

$("token-form").onsubmit = async (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  try {
    await api("GET", "/v1/status");
    localStorage.setItem("spore-token", token);
    start();
  } catch (err) {
    showLogin(err.message === "unauthorized" ? "the token was refused" : err.message);
  }
};

$("logout").onclick = () => {
  localStorage.removeItem("spore-token");
  token = "";
  showLogin();
};

$("download-form").onsubmit = async (e) => {
  e.preventDefault();
  $("download-error").textContent = "";
  try {
    await api("POST", "/v1/downloads", { ticket: $("ticket").value.trim() });
    $("ticket").value = "";
    refreshDownloads();
  } catch (err) {
    $("download-error").textContent = err.message;
  }
};

$("upload-form").onsubmit = async (e) => {
  e.preventDefault();
  $("share-error").textContent = "";
  const file = $("upload").files[0];
  if (!file) return;
  try {
    shared(await api("POST", `/v1/upload?name=${encodeURIComponent(file.name)}`, undefined, file));
  } catch (err) {
    $("share-error").textContent = err.message;
  }
};

$("path-form").onsubmit = async (e) => {
  e.preventDefault();
  $("share-error").textContent = "";
  try {
    shared(await api("POST", "/v1/add", { path: $("path").value.trim() }));
  } catch (err) {
    $("share-error").textContent = err.message;
  }
};

setInterval(() => { if (!$("app").hidden) tick(); }, 1000);
if (token) start(); else showLogin();
