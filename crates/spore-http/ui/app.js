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
    const name = cell(names.get(d.id) || d.id.slice(0, 16) + "…");
    if (d.kind === "collection") {
      const files = d.files == null ? "collection" : `collection, ${d.files_done}/${d.files} files`;
      const small = document.createElement("small");
      small.className = "kind";
      small.textContent = ` (${files})`;
      name.append(small);
    }
    tr.append(name);
    const bar = document.createElement("progress");
    bar.max = d.size || 1;
    bar.value = d.size ? d.verified_bytes : 0;
    const pct = d.size ? Math.floor((100 * d.verified_bytes) / d.size) : 0;
    const td = document.createElement("td");
    const label = document.createElement("span");
    label.className = "pct";
    label.textContent = `${pct}%`;
    td.append(bar, " ", label);
    const state = d.error ? `${d.state}: ${d.error}` : d.state;
    tr.append(td, cell(`${bytes(d.rate)}/s`), cell(String(d.peers)), cell(state));
    const actions = document.createElement("td");
    if (d.kind === "collection") {
      const browse = document.createElement("a");
      browse.href = `/c/${d.id}/`;
      browse.target = "_blank";
      browse.textContent = "Files";
      actions.append(browse);
    } else {
      const playBtn = document.createElement("button");
      playBtn.textContent = "Play";
      playBtn.className = "play";
      playBtn.onclick = () => play(d.id);
      actions.append(playBtn);
    }
    const act = (label, cls, method, path) => {
      const b = document.createElement("button");
      b.textContent = label;
      b.className = cls;
      b.onclick = () => {
        $("download-error").textContent = "";
        api(method, path)
          .catch((e) => { $("download-error").textContent = `${label}: ${e.message}`; })
          .then(refreshDownloads);
      };
      actions.append(" ", b);
    };
    if (d.state === "starting" || d.state === "downloading") {
      act("Pause", "pause", "POST", `/v1/downloads/${d.id}/pause`);
    }
    if (d.state === "paused") act("Resume", "resume", "POST", `/v1/downloads/${d.id}/resume`);
    if (d.state === "starting" || d.state === "downloading" || d.state === "paused") {
      act("Cancel", "cancel", "DELETE", `/v1/downloads/${d.id}`);
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

// Reads a text/event-stream response block by block: onEvent gets
// {id, event, data} for each event (comments and keep-alives skipped).
async function readEvents(res, onEvent, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    if (signal?.aborted) { reader.cancel().catch(() => {}); return; }
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      const ev = { id: "", event: "", data: "" };
      for (const line of block.split("\n")) {
        if (line.startsWith("id:")) ev.id = line.slice(3).trim();
        else if (line.startsWith("event:")) ev.event = line.slice(6).trim();
        else if (line.startsWith("data:")) ev.data += (ev.data ? "\n" : "") + line.slice(5).replace(/^ /, "");
      }
      if (ev.event || ev.data) onEvent(ev);
    }
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
      await readEvents(res, (ev) => {
        if (ev.id) lastEventId = ev.id;
        if (ev.event === "download") soon(refreshDownloads);
        if (ev.event.startsWith("peer_")) { soon(refreshPeers); soon(refreshStatus); }
        if (ev.event === "lagged") { soon(refreshDownloads); soon(refreshPeers); }
      });
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

// Search: /v1/search streams `hit` events (a result again when it gains a
// source) and one `done`; read with fetch for the token. A new search
// aborts the one running.
let searching = null;
function resultRow(hit) {
  const tr = document.createElement("tr");
  tr.dataset.id = hit.id;
  tr.dataset.kind = hit.kind;
  const media = hit.media && hit.media !== "other" ? `, ${hit.media}` : "";
  tr.append(cell(hit.name), cell(bytes(hit.size)), cell(String(hit.sources)), cell(hit.kind + media));
  const actions = document.createElement("td");
  const get = document.createElement("button");
  get.textContent = "Get";
  get.className = "get";
  get.onclick = async () => {
    $("search-error").textContent = "";
    remember(hit.id, hit.name);
    try {
      await api("POST", "/v1/downloads", { ticket: hit.id, kind: hit.kind === "collection" ? "collection" : "blob" });
      get.disabled = true;
      get.textContent = "Started";
      refreshDownloads();
    } catch (err) {
      $("search-error").textContent = `${hit.name}: ${err.message}`;
    }
  };
  actions.append(get);
  if (hit.kind === "collection") {
    const files = document.createElement("a");
    files.href = `/c/${hit.id}/`;
    files.target = "_blank";
    files.textContent = "Files";
    actions.append(" ", files);
  } else {
    if (hit.media === "video" || hit.media === "audio") {
      const link = document.createElement("a");
      link.href = `/b/${hit.id}?filename=${encodeURIComponent(hit.name)}`;
      link.className = "play";
      link.textContent = "Play";
      link.onclick = (e) => { e.preventDefault(); remember(hit.id, hit.name); play(hit.id); };
      actions.append(" ", link);
    }
  }
  tr.append(actions);
  return tr;
}

async function runSearch() {
  searching?.abort();
  const ctl = new AbortController();
  searching = ctl;
  const body = $("results").tBodies[0];
  body.replaceChildren();
  $("search-error").textContent = "";
  $("search-status").textContent = "searching…";
  const params = new URLSearchParams({ q: $("search-q").value.trim() });
  if ($("search-type").value) params.set("type", $("search-type").value);
  if ($("search-local").checked) params.set("local", "true");
  try {
    const res = await fetch(`/v1/search?${params}`, {
      headers: { Authorization: `Bearer ${token}` },
      signal: ctl.signal,
    });
    if (res.status === 401) { showLogin("the token was refused"); return; }
    if (!res.ok) {
      const json = await res.json().catch(() => null);
      throw new Error(json?.error?.message || `${res.status}`);
    }
    let count = 0;
    await readEvents(res, (ev) => {
      if (ev.event === "hit") {
        const hit = JSON.parse(ev.data);
        const row = resultRow(hit);
        const old = [...body.rows].find((r) => r.dataset.id === hit.id);
        if (old) old.replaceWith(row); else { body.append(row); count++; }
        $("search-status").textContent = `searching… ${count} so far`;
      } else if (ev.event === "done") {
        const done = JSON.parse(ev.data);
        $("search-status").textContent = `${done.results} result${done.results === 1 ? "" : "s"}`;
      }
    }, ctl.signal);
  } catch (err) {
    if (err.name === "AbortError") return;
    $("search-status").textContent = "";
    $("search-error").textContent = err.message;
  } finally {
    if (searching === ctl) searching = null;
  }
}

$("search-form").onsubmit = (e) => {
  e.preventDefault();
  runSearch();
};

setInterval(() => { if (!$("app").hidden) tick(); }, 1000);
if (token) start(); else showLogin();
