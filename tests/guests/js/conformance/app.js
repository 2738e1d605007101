// The JavaScript conformance guest: the protocol of /tests/conformance (docs in
// tests/guests/README or the suite), one op per request, named by the `op` header.
import cache from "flotilla:function/cache@0.1.1";
import http from "flotilla:function/http@0.1.1";
import s3 from "flotilla:function/s3@0.1.1";
import dynamodb from "flotilla:function/dynamodb@0.1.1";
import { log } from "flotilla:function/log@0.1.1";
import invocation from "flotilla:function/invocation@0.1.1";
import secrets from "flotilla:function/secrets@0.1.1";
import { publish } from "flotilla:function/topics@0.1.1";
import { job } from "flotilla:function/spawn@0.1.1";
import { getEnvironment } from "wasi:cli/environment@0.2.12";
import { getStdin } from "wasi:cli/stdin@0.2.12";
import { now as wallNow } from "wasi:clocks/wall-clock@0.2.12";
import { now as monotonicNow } from "wasi:clocks/monotonic-clock@0.2.12";
import { getRandomBytes } from "wasi:random/random@0.2.12";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (text) => encoder.encode(text);
const text = (data) => decoder.decode(data);

const reply = (status, body = new Uint8Array(0), headers = []) => ({ status, headers, body });
const ok = (body) => reply(200, typeof body === "string" ? bytes(body) : body);
const none = () => reply(204);
const maybe = (value) => (value === null ? none() : ok(value));
const bool = (value) => ok(value ? "true" : "false");

function header(request, name) {
  const found = request.headers.find(([key]) => key === name);
  return found ? found[1] : "";
}

function ttl(value) {
  return value === "" ? 0 : Number(value);
}

function readStdin() {
  const stream = getStdin();
  const chunks = [];
  try {
    for (;;) chunks.push(...stream.blockingRead(65536));
  } catch (e) {
    if (!e.payload || e.payload.tag !== "closed") throw e;
  } finally {
    stream[Symbol.dispose]();
  }
  return new Uint8Array(chunks);
}

function openFile(path) {
  for (const [dir, prefix] of getDirectories()) {
    if (path.startsWith(prefix)) {
      const rest = path.slice(prefix.length).replace(/^\/+/, "");
      dir.openAt({}, rest, {}, { read: true });
      return true;
    }
  }
  return false;
}

const OPS = {
  echo: (r) => reply(200, r.body, r.headers),
  status: (r, a) => reply(Number(a[1])),
  err: (r, a) => {
    throw a[1];
  },
  // A string or an Error thrown from handle is err(...); anything else traps.
  trap: () => {
    throw { trap: true };
  },
  spin: () => {
    for (;;) {}
  },
  memory: () => {
    const blocks = [];
    for (;;) {
      const block = new Uint8Array(1 << 20);
      block.fill(1);
      blocks.push(block);
    }
  },
  big: (r, a) => ok(new Uint8Array(Number(a[1])).fill(0x78)),
  env: (r, a) => {
    const found = getEnvironment().find(([name]) => name === a[1]);
    return found ? ok(found[1]) : none();
  },
  clock: () => {
    const wall = wallNow();
    const fraction = String(wall.nanoseconds).padStart(9, "0");
    return ok(`${wall.seconds}.${fraction} ${monotonicNow()}`);
  },
  random: () => ok(getRandomBytes(16)),
  file: (r, a) => {
    try {
      return ok(openFile(a[1]) ? "ok" : "error");
    } catch {
      return ok("error");
    }
  },
  socket: () => ok("error"), // QuickJS has no socket API
  stdin: () => ok(readStdin()),
  stdout: (r, a) => {
    console.log(a[1]);
    return none();
  },
  stderr: (r, a) => {
    console.error(a[1]);
    return none();
  },
  "cache-get": (r, a) => maybe(cache.get(a[1])),
  "cache-set": (r, a) => {
    cache.set(a[1], r.body, ttl(a[2]));
    return none();
  },
  "cache-set-if-absent": (r, a) => bool(cache.setIfAbsent(a[1], r.body, ttl(a[2]))),
  "cache-set-if-present": (r, a) => bool(cache.setIfPresent(a[1], r.body, ttl(a[2]))),
  "cache-set-if-equal": (r, a) =>
    bool(cache.setIfEqual(a[1], bytes(header(r, "expected")), r.body, ttl(a[2]))),
  "cache-delete": (r, a) => {
    cache.delete(a[1]);
    return none();
  },
  "cache-increment": (r, a) => ok(String(cache.increment(a[1], Number(a[2]), ttl(a[3])))),
  http: (r, a) => {
    const timeoutMs = a[3] === "" ? null : Number(a[3]);
    const got = http.invoke({ method: a[1], url: a[2], headers: [], body: r.body, timeoutMs });
    return reply(got.status, got.body, got.headers);
  },
  "s3-get": (r, a) => maybe(s3.getObject(a[1], a[2])),
  "s3-put": (r, a) => {
    s3.putObject(a[1], a[2], r.body, a[3] === "" ? null : a[3]);
    return none();
  },
  "s3-delete": (r, a) => {
    s3.deleteObject(a[1], a[2]);
    return none();
  },
  "ddb-get": (r, a) => maybe(dynamodb.getItem(a[1], a[2])),
  "ddb-put": (r, a) => {
    dynamodb.putItem(a[1], a[2]);
    return none();
  },
  "ddb-put-if": (r, a) => bool(dynamodb.putItemIf(a[1], a[2], a[3], a[4])),
  "ddb-delete": (r, a) => {
    dynamodb.deleteItem(a[1], a[2]);
    return none();
  },
  log: (r, a) => {
    log(a[1], a[2]);
    return none();
  },
  invocation: () => {
    const query = invocation.query().map(([k, v]) => `${k}=${v}`).join("&");
    const lines = [
      invocation.method(),
      invocation.path(),
      query,
      invocation.caller() ?? "",
      invocation.kind(),
      String(invocation.attempt()),
    ];
    return ok(lines.join("\n"));
  },
  secret: (r, a) => maybe(secrets.get(a[1])),
  publish: (r, a) => {
    publish(a[1], r.body);
    return none();
  },
  spawn: (r, a) => ok(job(a[1], [], r.body)),
};

/** The entry point: run the op the `op` header names. */
export function handle(request) {
  const op = OPS[header(request, "op")];
  if (op === undefined || !Object.hasOwn(OPS, header(request, "op"))) {
    return reply(400, bytes("unknown op"));
  }
  const args = ["", header(request, "a1"), header(request, "a2"), header(request, "a3"),
    header(request, "a4")];
  try {
    return op(request, args);
  } catch (e) {
    // A failed host call throws an Error whose payload is the interface's error variant.
    if (e instanceof Error && e.payload && typeof e.payload.tag === "string") {
      const { tag, val } = e.payload;
      return reply(590, bytes(val === undefined ? tag : `${tag}:${val}`));
    }
    throw e;
  }
}
