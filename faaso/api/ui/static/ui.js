// faaso UI: what htmx does not cover. The invoke form (the browser calls the function itself,
// as any client would), and the live log's length and scrolling.
"use strict";

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function parseHeaders(text) {
  const headers = new Headers();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line) continue;
    const at = line.indexOf(":");
    if (at < 1) throw new Error("a header is Name: value, got " + JSON.stringify(line));
    headers.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
  }
  return headers;
}

async function invoke(form) {
  const out = document.getElementById("invoke-result");
  out.replaceChildren(el("p", { class: "hint" }, "Calling…"));
  const name = form.dataset.function;
  const method = form.method.value;
  let path = form.path.value.trim();
  if (path && !path.startsWith("/") && !path.startsWith("?")) path = "/" + path;
  const mode = form.querySelector("input[name=mode]:checked").value;
  const replicas = document.getElementById("replicas");
  const cold = replicas && replicas.dataset.available === "0";
  let headers, body;
  try {
    headers = parseHeaders(form.headers.value);
    if (method !== "GET" && method !== "HEAD") {
      if (mode === "file") {
        body = form.file.files[0] || null;
      } else if (mode === "json") {
        body = JSON.stringify(JSON.parse(form.body.value || "null"));
        if (!headers.has("Content-Type")) headers.set("Content-Type", "application/json");
      } else {
        body = form.body.value;
      }
    }
  } catch (err) {
    out.replaceChildren(el("p", { class: "msg err", role: "alert" }, String(err.message || err)));
    return;
  }
  const started = performance.now();
  let response, blob, queued = false;
  try {
    // From the origin: a page opened as http://user:pass@host/ cannot fetch relative URLs.
    queued = form.querySelector("input[name=call]:checked").value === "async";
    const base = queued ? "/async-function/" : "/function/";
    const url = new URL(base + encodeURIComponent(name) + path, location.origin);
    response = await fetch(url, {
      method, headers, body, credentials: "omit", cache: "no-store",
    });
    blob = await response.blob();
  } catch (err) {
    out.replaceChildren(el("p", { class: "msg err", role: "alert" }, "The call failed: " + err));
    return;
  }
  const took = performance.now() - started;
  const callId = response.headers.get("X-Call-Id");
  if (queued && response.status === 202 && callId) {
    // Queued: the answer is the call id; what the function answers is on its job's page.
    const done = el("div", { class: "result", "data-status": "202" });
    const line = el("p", { class: "msg ok", role: "status" }, "Queued as call ");
    line.append(el("a", { href: "/ui/async/job/" + encodeURIComponent(callId), id: "invoke-call-id" }, callId),
                document.createTextNode(" (202 in " + took.toFixed(0) + " ms): its job shows the answer."));
    done.append(line);
    out.replaceChildren(done);
    return;
  }
  const result = el("div", { class: "result", "data-status": String(response.status) });
  const meta = el("div", { class: "result-meta" });
  meta.append(
    el("span", { class: "status-" + String(response.status)[0], id: "invoke-status" },
       response.status + " " + response.statusText),
    el("span", {}, "took " + took.toFixed(0) + " ms" +
       (response.headers.get("X-Duration-Seconds")
         ? " (function " + (1000 * Number(response.headers.get("X-Duration-Seconds"))).toFixed(1) + " ms)"
         : "")),
    el("span", {}, cold ? "cold start: no replica was ready" : "warm: a replica was ready"),
  );
  result.append(meta);
  const hdrs = el("details", {});
  hdrs.append(el("summary", {}, "Response headers"));
  const lines = [];
  response.headers.forEach((v, k) => lines.push(k + ": " + v));
  hdrs.append(el("pre", { class: "small" }, lines.join("\n")));
  result.append(hdrs);
  const type = (response.headers.get("Content-Type") || "").toLowerCase();
  if (type.startsWith("image/")) {
    result.append(el("img", { src: URL.createObjectURL(blob), alt: "the function's image answer" }));
  } else if (type.includes("json") || type.startsWith("text/") || type === "" ||
             type.includes("xml") || type.includes("javascript")) {
    let text = await blob.text();
    if (type.includes("json")) {
      try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (_) { /* as sent */ }
    }
    result.append(el("pre", { id: "invoke-body" }, text));
  } else {
    const link = el("a", { href: URL.createObjectURL(blob), download: name + "-response" },
                    "Download the answer (" + blob.size + " bytes, " + type + ")");
    result.append(link);
  }
  out.replaceChildren(result);
}

// A form's request that never got an answer (the browser aborted it: the network changed, the
// server went away, or it timed out) says so where its answer would go: htmx alone shows nothing.
function requestFailed(ev) {
  const target = ev.detail.target || ev.detail.elt;
  if (!target) return;
  const what = ev.type === "htmx:timeout" ? "timed out" : "got no answer (a network error)";
  target.replaceChildren(el("p", { class: "msg err send-error", role: "alert" },
                            "The request " + what + ": it may not have been applied; try again."));
}

function setUp() {
  document.body.addEventListener("htmx:sendError", requestFailed);
  document.body.addEventListener("htmx:timeout", requestFailed);
  const form = document.getElementById("invoke");
  if (form) {
    form.addEventListener("submit", (ev) => { ev.preventDefault(); invoke(form); });
    const sync = () => {
      const mode = form.querySelector("input[name=mode]:checked").value;
      form.querySelector(".body-text").hidden = mode === "file";
      form.querySelector(".body-file").hidden = mode !== "file";
    };
    form.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", sync));
    sync();
  }
  const logs = document.getElementById("logs");
  if (logs) {
    document.body.addEventListener("htmx:sseMessage", () => {
      while (logs.childElementCount > 500) logs.firstElementChild.remove();
      const atEnd = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 40;
      if (atEnd) logs.scrollTop = logs.scrollHeight;
    });
  }
}

document.addEventListener("DOMContentLoaded", setUp);

// A page left for another keeps no event stream open: a browser that keeps it in its
// back/forward cache would otherwise hold the connection, and after six of them (HTTP/1.1's
// limit per server) the next page load waits (Chromium: about a minute). The streams are
// htmx's (its sse extension makes them with `new EventSource`), so they are tracked here and
// closed on pagehide; a page brought back from that cache is reloaded, so that it is live again.
const openStreams = new Set();
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(url, init) {
    super(url, init);
    openStreams.add(this);
  }
  close() {
    openStreams.delete(this);
    super.close();
  }
};
window.addEventListener("pagehide", () => {
  for (const stream of [...openStreams]) stream.close();
});
window.addEventListener("pageshow", (event) => {
  if (event.persisted) location.reload();
});
