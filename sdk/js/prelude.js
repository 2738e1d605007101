// Flotilla's prelude for QuickJS guests: `console`, `TextEncoder` and `TextDecoder`, which
// QuickJS does not have. The builder evaluates it before the guest's own modules (at build
// time, in the snapshot), so nothing here runs per invocation until it is called.
// Only UTF-8 is supported; console output goes to the invocation's captured stdout/stderr.
import { getStdout } from "wasi:cli/stdout@0.2.12";
import { getStderr } from "wasi:cli/stderr@0.2.12";

function encodeUtf8(text) {
  const s = String(text);
  const out = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate
    if (c < 0x80) {
      out[n++] = c;
    } else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 0x3f);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    }
  }
  return out.slice(0, n);
}

// Decodes UTF-8; malformed sequences become U+FFFD (or throw a TypeError when `fatal`).
function decodeUtf8(bytes, fatal) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const parts = [];
  let chunk = [];
  const bad = () => {
    if (fatal) throw new TypeError("The encoded data was not valid utf-8");
    chunk.push(0xfffd);
  };
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let need = 0;
    let min = 0;
    let cp = 0;
    if (c < 0x80) {
      chunk.push(c);
      i++;
    } else {
      if (c >= 0xc2 && c <= 0xdf) { need = 1; cp = c & 0x1f; min = 0x80; }
      else if (c >= 0xe0 && c <= 0xef) { need = 2; cp = c & 0x0f; min = 0x800; }
      else if (c >= 0xf0 && c <= 0xf4) { need = 3; cp = c & 0x07; min = 0x10000; }
      else { bad(); i++; continue; }
      let j = 1;
      for (; j <= need; j++) {
        const d = b[i + j];
        if (d === undefined || (d & 0xc0) !== 0x80) break;
        cp = (cp << 6) | (d & 0x3f);
      }
      if (j <= need || cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        bad();
        i += j <= need ? j : 1; // skip the truncated sequence, or just the lead byte
        continue;
      }
      if (cp >= 0x10000) {
        cp -= 0x10000;
        chunk.push(0xd800 + (cp >> 10), 0xdc00 + (cp & 0x3ff));
      } else {
        chunk.push(cp);
      }
      i += need + 1;
    }
    if (chunk.length >= 8192) {
      parts.push(String.fromCharCode.apply(null, chunk));
      chunk = [];
    }
  }
  parts.push(String.fromCharCode.apply(null, chunk));
  return parts.join("");
}

class TextEncoder {
  get encoding() {
    return "utf-8";
  }
  encode(text = "") {
    return encodeUtf8(text);
  }
}

class TextDecoder {
  constructor(label = "utf-8", options = {}) {
    const name = String(label).toLowerCase();
    if (name !== "utf-8" && name !== "utf8") {
      throw new RangeError(`TextDecoder: only utf-8 is supported, not ${label}`);
    }
    this.fatal = Boolean(options && options.fatal);
  }
  get encoding() {
    return "utf-8";
  }
  decode(bytes = new Uint8Array(0)) {
    return decodeUtf8(bytes, this.fatal);
  }
}

function show(value) {
  if (typeof value === "string") return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  try {
    const json = JSON.stringify(value);
    return json === undefined ? String(value) : json;
  } catch {
    return String(value);
  }
}

function writer(stream) {
  return (...args) => {
    const line = encodeUtf8(args.map(show).join(" ") + "\n");
    const out = stream();
    try {
      // blocking-write-and-flush takes at most 4096 bytes at a time.
      for (let at = 0; at < line.length; at += 4096) {
        out.blockingWriteAndFlush(line.subarray(at, at + 4096));
      }
    } finally {
      out[Symbol.dispose]();
    }
  };
}

/**
 * Ends the invocation with a trap whose last words on stderr are `message` (the builder's
 * entry module calls it when QuickJS runs out of memory, so the sandbox reports
 * memory_limit as for every other language instead of a function error).
 */
export function fatal(message) {
  try {
    const err = getStderr();
    err.blockingWriteAndFlush(encodeUtf8(`${message}\n`));
    err[Symbol.dispose]();
  } finally {
    // Only a string or an Error thrown from `handle` becomes err(...): anything else traps.
    throw { fatal: message };
  }
}

if (typeof globalThis.TextEncoder === "undefined") globalThis.TextEncoder = TextEncoder;
if (typeof globalThis.TextDecoder === "undefined") globalThis.TextDecoder = TextDecoder;
if (typeof globalThis.console === "undefined") {
  const out = writer(getStdout);
  const err = writer(getStderr);
  globalThis.console = { log: out, info: out, debug: out, warn: err, error: err };
}
