// faaso node runtime: the HTTP server inside each function's container.
//
// It loads handler.js from FAASO_FUNCTION_DIR (module.exports = async (event, context) => ...,
// or exports.handle; an ES module's default export works too) and calls it for every request,
// with the same event and response shapes as faaso's python runtime.
//
// event:   body (Buffer), headers (object, lower-case names), method ("GET"...), path (what the
//          function sees, percent-decoded: "/", "/x"), query (object: the first value of each
//          parameter), queryAll (URLSearchParams with every value: event.queryAll.getAll("a")).
// context: hostname (the container's host name).
//
// What the handler returns (or resolves to) becomes the response:
// - an object with statusCode: that status, its optional headers (an array value repeats the
//   header) and optional body: string (text/plain), Buffer/Uint8Array
//   (application/octet-stream), anything else JSON-encoded (application/json); a Content-Type
//   in headers wins;
// - a string: text/plain; charset=utf-8 -- a Buffer: application/octet-stream;
// - any other object, an array, a number or a boolean: JSON (NaN and Infinity are refused);
// - null or undefined: 200 with an empty body.
// A thrown error (or a value that cannot be sent) becomes a 500, its stack on stderr under the
// request's call id (X-Call-Id, made up when absent); the server keeps serving. The 500's JSON
// body is {"error": "the function failed; ... call id <id>", "call_id": "<id>"}; only with
// FAASO_DEBUG=1 does it carry the error's message, name and stack ({"error", "type",
// "traceback", "call_id"}), which may reveal secrets. /_/health answers 200 {"status":"ok"} without calling the handler. SIGTERM or
// SIGINT: stop accepting, give in-flight requests the shutdown grace to finish, exit 0.
//
// Environment: PORT (8080), FAASO_HOST (0.0.0.0), FAASO_FUNCTION_DIR (/app/function),
// FAASO_MAX_BODY (largest request body in bytes, 64 MiB), FAASO_SHUTDOWN_GRACE (seconds, 9),
// FAASO_ACCESS_LOG (1 prints one line per request to stdout), FAASO_DEBUG (1: error details in
// 500 bodies), FAASO_SOCKET (unset: TCP only; a
// path, which faaso sets to /run/faaso/function.sock: the same handler is also served on that
// Unix socket, made mode 0666 after a stale file there is removed, listening before the TCP port
// so it is ready whenever a health check passes, and removed again on exit; if it cannot be
// made, a warning goes to stderr and TCP serves alone).
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const http = require("http");
const os = require("os");
const path = require("path");
const { pathToFileURL } = require("url");

const PREFIX = "faaso node runtime:";
const CALL_ID = "X-Call-Id";
const HEALTH_PATH = "/_/health";
const HEALTH_BODY = Buffer.from('{"status":"ok"}');
const JSON_TYPE = "application/json";
const TEXT_TYPE = "text/plain; charset=utf-8";
const BINARY_TYPE = "application/octet-stream";

function fail(message) {
  process.stderr.write(`${PREFIX} ${message}\n`);
  process.exit(1);
}

function envNumber(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!(value > 0) || !Number.isFinite(value)) fail(`${name}=${JSON.stringify(raw)} must be a positive number`);
  return value;
}

async function loadHandler(functionDir) {
  const file = path.join(functionDir, "handler.js");
  if (!fs.existsSync(file)) fail(`no handler.js in ${functionDir} (set FAASO_FUNCTION_DIR)`);
  let mod;
  try {
    mod = require(file);
  } catch (err) {
    if (err && err.code === "ERR_REQUIRE_ESM") {
      try {
        mod = await import(pathToFileURL(file).href);
      } catch (inner) {
        console.error(inner);
        fail(`loading ${file} failed: ${describe(inner)}`);
      }
    } else {
      console.error(err);
      fail(`loading ${file} failed: ${describe(err)}`);
    }
  }
  const candidates = [mod, mod && mod.handle, mod && mod.default, mod && mod.default && mod.default.handle];
  const handle = candidates.find((c) => typeof c === "function");
  if (!handle) fail(`${file} exports no function: use module.exports = async (event, context) => ...`);
  return handle;
}

function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

function encodeJson(value) {
  const text = JSON.stringify(value, (key, item) => {
    if (typeof item === "number" && !Number.isFinite(item)) {
      throw new TypeError(`${item} is not a JSON number`);
    }
    return item;
  });
  if (text === undefined) throw new TypeError(`the handler returned a ${typeof value}, which faaso cannot send`);
  return Buffer.from(text);
}

function isBinary(value) {
  return Buffer.isBuffer(value) || value instanceof Uint8Array;
}

// -> [status, headers as [name, value] pairs, body Buffer]
function toResponse(result) {
  if (result !== null && typeof result === "object" && !isBinary(result) && !Array.isArray(result) && "statusCode" in result) {
    return explicitResponse(result);
  }
  if (result === null || result === undefined) return [200, [], Buffer.alloc(0)];
  if (typeof result === "string") return [200, [["Content-Type", TEXT_TYPE]], Buffer.from(result)];
  if (isBinary(result)) return [200, [["Content-Type", BINARY_TYPE]], Buffer.from(result)];
  if (typeof result === "object" || typeof result === "number" || typeof result === "boolean") {
    return [200, [["Content-Type", JSON_TYPE]], encodeJson(result)];
  }
  throw new TypeError(`the handler returned a ${typeof result}, which faaso cannot send`);
}

function explicitResponse(result) {
  const status = result.statusCode;
  if (!Number.isInteger(status) || status < 100 || status > 599) {
    throw new TypeError(`statusCode must be an HTTP status number, not ${JSON.stringify(status)}`);
  }
  const headers = [];
  for (const [name, value] of Object.entries(result.headers || {})) {
    for (const item of Array.isArray(value) ? value : [value]) headers.push([String(name), String(item)]);
  }
  const body = result.body;
  let data;
  let defaultType = null;
  if (body === null || body === undefined) {
    data = Buffer.alloc(0);
  } else if (typeof body === "string") {
    [data, defaultType] = [Buffer.from(body), TEXT_TYPE];
  } else if (isBinary(body)) {
    [data, defaultType] = [Buffer.from(body), BINARY_TYPE];
  } else {
    [data, defaultType] = [encodeJson(body), JSON_TYPE];
  }
  if (defaultType && !headers.some(([name]) => name.toLowerCase() === "content-type")) {
    headers.push(["Content-Type", defaultType]);
  }
  return [status, headers, data];
}

// The 500 for a handler's error: its message, name and stack only in debug mode (they may carry
// secrets or internals); otherwise a message with the call id to find the stack by in the log.
function errorResponse(err, callId, debug) {
  let payload = {
    error: `the function failed; its traceback is in the container's log under call id ${callId}`,
    call_id: callId,
  };
  if (debug) {
    payload = {
      error: (err instanceof Error ? err.message : String(err)) || (err && err.name) || "Error",
      type: err instanceof Error ? err.name : typeof err,
      traceback: err && err.stack ? String(err.stack) : describe(err),
      call_id: callId,
    };
  }
  return [500, [["Content-Type", JSON_TYPE], [CALL_ID, callId]], Buffer.from(JSON.stringify(payload))];
}

function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= limit) chunks.push(chunk); // past the limit: drained, then answered 413
    });
    req.on("end", () => {
      if (size > limit) reject(Object.assign(new Error("request body too large"), { tooLarge: true }));
      else resolve(Buffer.concat(chunks));
    });
    req.on("error", reject);
  });
}

function makeEvent(req, body) {
  const url = new URL(req.url, "http://function.invalid");
  let pathname = url.pathname;
  try {
    pathname = decodeURIComponent(pathname);
  } catch {
    // a malformed escape: leave the path as it came
  }
  const query = {};
  for (const [key, value] of url.searchParams) {
    if (!(key in query)) query[key] = value;
  }
  return { body, headers: req.headers, method: req.method, path: pathname, query, queryAll: url.searchParams };
}

function send(res, status, headers, body, closing) {
  for (const [name, value] of headers) {
    const existing = res.getHeader(name);
    res.setHeader(name, existing === undefined ? value : [].concat(existing, value));
  }
  if (closing) res.setHeader("Connection", "close");
  res.setHeader("Content-Length", body.length);
  res.writeHead(status);
  res.end(body);
}

async function main() {
  const functionDir = path.resolve(process.env.FAASO_FUNCTION_DIR || "/app/function");
  const host = process.env.FAASO_HOST || "0.0.0.0";
  const port = Math.trunc(envNumber("PORT", 8080));
  const maxBody = Math.trunc(envNumber("FAASO_MAX_BODY", 64 * 1024 * 1024));
  const grace = envNumber("FAASO_SHUTDOWN_GRACE", 9) * 1000;
  const accessLog = process.env.FAASO_ACCESS_LOG === "1";
  const debug = process.env.FAASO_DEBUG === "1";
  const socketPath = process.env.FAASO_SOCKET || "";
  const handle = await loadHandler(functionDir);
  const context = Object.freeze({ hostname: os.hostname() });

  let stopping = false;
  let inFlight = 0;
  let onIdle = null;

  const serve = async (req, res) => {
    inFlight += 1;
    let status = 500;
    // Counted until the response is flushed (or the client went away), so a shutdown never
    // exits with a response half written.
    res.on("close", () => {
      if (accessLog) process.stdout.write(`${req.method} ${req.url} ${status}\n`);
      inFlight -= 1;
      if (inFlight === 0 && onIdle) onIdle();
    });
    {
      if (req.url === HEALTH_PATH || req.url.startsWith(HEALTH_PATH + "?")) {
        req.resume();
        status = 200;
        send(res, 200, [["Content-Type", JSON_TYPE]], HEALTH_BODY, stopping);
        return;
      }
      let body;
      try {
        body = await readBody(req, maxBody);
      } catch (err) {
        if (err.tooLarge) {
          status = 413;
          send(res, 413, [["Content-Type", TEXT_TYPE]], Buffer.from("request body too large"), true);
        }
        return;
      }
      let response;
      try {
        response = toResponse(await handle(makeEvent(req, body), context));
      } catch (err) {
        const callId = req.headers["x-call-id"] || crypto.randomUUID();
        process.stderr.write(
          `${PREFIX} call ${callId}: ${req.method} ${req.url} failed:\n${err && err.stack ? err.stack : describe(err)}\n`,
        );
        response = errorResponse(err, callId, debug);
      }
      status = response[0];
      send(res, ...response, stopping);
    }
  };
  function newServer() {
    const made = http.createServer(serve);
    // Longer than any client pool's idle time, as the python runtime's aiohttp server does.
    made.keepAliveTimeout = 75 * 1000;
    made.headersTimeout = 80 * 1000;
    return made;
  }
  const server = newServer(); // TCP
  let unixServer = null; // FAASO_SOCKET, the same handler
  let socketInode = null;

  function removeSocket() {
    // Ours only: never a file that something else has put there meanwhile.
    try {
      if (socketInode !== null && fs.statSync(socketPath).ino === socketInode) fs.unlinkSync(socketPath);
    } catch {
      // already gone
    }
  }

  function shutdown() {
    if (stopping) return;
    stopping = true;
    const servers = unixServer ? [server, unixServer] : [server];
    for (const s of servers) {
      s.close();
      if (s.closeIdleConnections) s.closeIdleConnections();
    }
    const timer = setTimeout(() => {
      process.stderr.write(`${PREFIX} requests still running after the shutdown grace; exiting anyway\n`);
      removeSocket();
      process.exit(0);
    }, grace);
    timer.unref();
    onIdle = () => {
      for (const s of servers) if (s.closeAllConnections) s.closeAllConnections();
      removeSocket();
      process.exit(0);
    };
    if (inFlight === 0) onIdle();
  }
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);

  // The Unix socket first, so that it listens by the time the TCP port answers a health check.
  function listenUnix(then) {
    if (!socketPath) return then();
    const giveUp = (err) => {
      process.stderr.write(`${PREFIX} cannot listen on FAASO_SOCKET=${socketPath}: ${describe(err)}; serving TCP only\n`);
      unixServer = null;
      then();
    };
    try {
      if (!fs.lstatSync(socketPath).isDirectory()) fs.unlinkSync(socketPath); // a stale one
    } catch (err) {
      if (!err || err.code !== "ENOENT") return giveUp(err);
    }
    unixServer = newServer();
    unixServer.once("error", giveUp);
    unixServer.listen({ path: socketPath, backlog: 2048 }, () => {
      unixServer.removeListener("error", giveUp);
      unixServer.on("error", (err) => process.stderr.write(`${PREFIX} ${socketPath}: ${describe(err)}\n`));
      try {
        fs.chmodSync(socketPath, 0o666); // faaso, on the host, may be another uid than ours
        socketInode = fs.statSync(socketPath).ino;
      } catch (err) {
        unixServer.close();
        return giveUp(err);
      }
      then();
    });
  }

  listenUnix(() => {
    server.on("error", (err) => fail(`cannot listen on ${host}:${port}: ${describe(err)}`));
    server.listen({ host, port, backlog: 2048 }, () => {
      const where = `${host}:${port}${unixServer ? ` and ${socketPath}` : ""}`;
      process.stdout.write(`${PREFIX} serving ${path.join(functionDir, "handler.js")} on ${where} with node ${process.version}\n`);
    });
  });
}

main().catch((err) => {
  console.error(err);
  fail(describe(err));
});
