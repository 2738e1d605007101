// The TypeScript conformance guest: the protocol every language's conformance guest
// implements (ops named by the `op` header, arguments in a1..a4), typed against sdk/js.
import cache from "flotilla:function/cache@0.1.1";
import http from "flotilla:function/http@0.1.1";
import s3 from "flotilla:function/s3@0.1.1";
import dynamodb from "flotilla:function/dynamodb@0.1.1";
import { log, type Level } from "flotilla:function/log@0.1.1";
import invocation from "flotilla:function/invocation@0.1.1";
import secrets from "flotilla:function/secrets@0.1.1";
import { publish } from "flotilla:function/topics@0.1.1";
import { job } from "flotilla:function/spawn@0.1.1";
import type { Request, Response } from "flotilla:function/types@0.1.1";
import { getEnvironment } from "wasi:cli/environment@0.2.12";
import { getStdin } from "wasi:cli/stdin@0.2.12";
import { getStdout } from "wasi:cli/stdout@0.2.12";
import { getStderr } from "wasi:cli/stderr@0.2.12";
import { now as wallNow } from "wasi:clocks/wall-clock@0.2.12";
import { now as monotonicNow } from "wasi:clocks/monotonic-clock@0.2.12";
import { getRandomBytes } from "wasi:random/random@0.2.12";
import { getDirectories } from "wasi:filesystem/preopens@0.2.12";
import { bool, bytes, header, hostError, maybe, none, ok, reply } from "./reply.js";

type Args = [string, string, string, string, string];
type Op = (request: Request, a: Args) => Response;

const ttl = (value: string): number => (value === "" ? 0 : Number(value));

function readStdin(): Uint8Array {
  const stream = getStdin();
  const chunks: number[] = [];
  try {
    for (;;) chunks.push(...stream.blockingRead(65536));
  } catch (e) {
    if (hostError(e)?.tag !== "closed") throw e;
  } finally {
    stream[Symbol.dispose]();
  }
  return new Uint8Array(chunks);
}

function write(stream: WasiOutputStream, text: string): Response {
  try {
    stream.blockingWriteAndFlush(bytes(text + "\n"));
  } finally {
    stream[Symbol.dispose]();
  }
  return none();
}

const OPS: Record<string, Op> = {
  echo: (r) => reply(200, r.body, r.headers),
  status: (r, a) => reply(Number(a[1])),
  err: (r, a) => {
    throw a[1];
  },
  trap: () => {
    // A string or an Error thrown from handle is err(...); anything else traps.
    throw { trap: true };
  },
  spin: () => {
    for (;;) {
      // never returns
    }
  },
  memory: () => {
    const blocks: Uint8Array[] = [];
    for (;;) blocks.push(new Uint8Array(1 << 20).fill(1));
  },
  big: (r, a) => ok(new Uint8Array(Number(a[1])).fill(0x78)),
  env: (r, a) => {
    const found = getEnvironment().find(([name]) => name === a[1]);
    return found ? ok(found[1]) : none();
  },
  clock: () => {
    const wall = wallNow();
    return ok(`${wall.seconds}.${String(wall.nanoseconds).padStart(9, "0")} ${monotonicNow()}`);
  },
  random: () => ok(getRandomBytes(16)),
  file: (r, a) => ok(getDirectories().some(([, dir]) => a[1].startsWith(dir)) ? "ok" : "error"),
  socket: () => ok("error"), // QuickJS has no socket API
  stdin: () => ok(readStdin()),
  stdout: (r, a) => write(getStdout(), a[1]),
  stderr: (r, a) => write(getStderr(), a[1]),
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
    log(a[1] as Level, a[2]);
    return none();
  },
  invocation: () => {
    const query = invocation.query().map(([k, v]) => `${k}=${v}`).join("&");
    const caller = invocation.caller() ?? "";
    const lines = [invocation.method(), invocation.path(), query, caller, invocation.kind()];
    return ok([...lines, String(invocation.attempt())].join("\n"));
  },
  secret: (r, a) => maybe(secrets.get(a[1])),
  publish: (r, a) => {
    publish(a[1], r.body);
    return none();
  },
  spawn: (r, a) => ok(job(a[1], [], r.body)),
};

/** The entry point: run the op the `op` header names. */
export function handle(request: Request): Response {
  const name = header(request, "op");
  if (!Object.hasOwn(OPS, name)) return reply(400, bytes("unknown op"));
  const args: Args = ["", header(request, "a1"), header(request, "a2"), header(request, "a3"),
    header(request, "a4")];
  try {
    return OPS[name](request, args);
  } catch (e) {
    const failed = hostError(e);
    if (failed === null) throw e;
    return reply(590, bytes(failed.val === undefined ? failed.tag : `${failed.tag}:${failed.val}`));
  }
}
