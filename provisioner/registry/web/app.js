// Station page: today's batch, refreshed every 2 s by polling the API.
// The station token comes from the URL fragment (#token=…, never sent to a server log) or the
// form, once: it is traded for an HttpOnly, SameSite=Strict session cookie and dropped from the
// address; the page never keeps it.
"use strict";
const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);

function today() {
  const d = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

async function openSession(token) {
  const r = await fetch("/api/v1/session", { method: "POST",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
  return r.ok;
}

async function fromFragment() {
  localStorage.removeItem("deelit-token");  // what earlier versions of this page kept
  const m = location.hash.match(/token=([^&]+)/);
  if (!m) return;
  history.replaceState(null, "", location.pathname);
  await openSession(decodeURIComponent(m[1]));
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text ?? "–";
  if (cls) td.className = cls;
  return td;
}

function render(devices) {
  const body = $("#devices tbody");
  const rows = devices.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.tag = d.asset_tag;
    const at = d.last_event && new Date(d.last_event.at)  // UTC from the API, shown local
      .toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const last = d.last_event ? `${d.last_event.type} ${at}` : null;
    tr.append(cell(d.asset_tag, "tag"), cell([d.maker, d.model].filter(Boolean).join(" ")),
      cell(d.status, `stage stage-${d.status}`), cell(d.grade, "grade"), cell(last, "last"));
    return tr;
  });
  body.replaceChildren(...rows);
  const counts = {};
  devices.forEach((d) => { counts[d.status] = (counts[d.status] || 0) + 1; });
  const parts = Object.entries(counts).map(([s, n]) => `${n} ${s}`);
  $("#summary").textContent = `${devices.length} toestellen` + (parts.length ? `: ${parts.join(", ")}` : "");
  $("#updated").textContent = `bijgewerkt ${new Date().toLocaleTimeString()}`;
}

async function poll() {
  try {
    const r = await fetch(`/api/v1/devices?batch=${today()}&limit=1000`);
    if (r.status === 401 || r.status === 403) {
      $("#login").hidden = false;
      $("#summary").textContent = "token nodig";
      $("#devices tbody").replaceChildren();
      return;
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    $("#error").hidden = true;
    render(await r.json());
  } catch (e) {
    $("#error").textContent = `Registry onbereikbaar: ${e.message}`;
    $("#error").hidden = false;
  }
  setTimeout(poll, POLL_MS);
}

$("#login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ok = await openSession($("#token").value.trim());
  $("#token").value = "";
  if (!ok) {
    $("#error").textContent = "Token geweigerd (onbekend, ingetrokken of geen stationtoken).";
    $("#error").hidden = false;
    return;
  }
  $("#login").hidden = true;
  $("#error").hidden = true;
  poll();
});
$("#day").textContent = today();
fromFragment().then(poll);
