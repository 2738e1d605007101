// Rate-limited token vending (the TypeScript version of examples/token-vending).
//
// Each caller (the `x-caller` header, default `anonymous`) may get RATE_LIMIT tokens
// (default 10) per fixed window of RATE_WINDOW_MS (default 60000). Counting uses
// cache.increment on a key per caller and window, created with the window as its TTL.
// Over the limit the answer is 429 with `retry-after`; otherwise 200 with a JSON body
// {"token": ..., "remaining": n, "expires_in_ms": ...}. The token is also stored in the
// cache for TOKEN_TTL_MS (default 300000) so another function can verify it. When the
// cache is unavailable no token is vended (503): failing closed keeps the limit meaningful.
import cache, { type Error as CacheError } from "flotilla:function/cache@0.1.1";
import type { Headers, Request, Response } from "flotilla:function/types@0.1.1";
import { getEnvironment } from "wasi:cli/environment@0.2.12";
import { getRandomBytes } from "wasi:random/random@0.2.12";

const encoder = new TextEncoder();

function reply(status: number, payload: object, headers: Headers = []): Response {
  const body = encoder.encode(JSON.stringify(payload));
  return { status, headers: [["content-type", "application/json"], ...headers], body };
}

function setting(name: string, fallback: string): number {
  const found = getEnvironment().find(([key]) => key === name);
  return Number(found ? found[1] : fallback);
}

function callerOf(request: Request): string {
  const found = request.headers.find(([key, value]) => key.toLowerCase() === "x-caller" && value);
  return found ? found[1].slice(0, 200) : "anonymous";
}

/** 32 random bytes as URL-safe base64 without padding (43 characters). */
function newToken(): string {
  const binary = String.fromCharCode(...getRandomBytes(32));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** What a failed cache call threw, for the error message. */
function describe(e: unknown): string {
  const payload = (e as FlotillaHostError<CacheError>).payload;
  return payload ? `${payload.tag}: ${payload.val}` : String(e);
}

/** Vend a token unless the caller is over its limit in the current window. */
export function handle(request: Request): Response {
  const limit = setting("RATE_LIMIT", "10");
  const windowMs = setting("RATE_WINDOW_MS", "60000");
  const tokenTtlMs = setting("TOKEN_TTL_MS", "300000");
  const caller = callerOf(request);
  const nowMs = Date.now();
  const window = Math.floor(nowMs / windowMs);
  let count: number;
  try {
    count = cache.increment(`rate:${caller}:${window}`, 1, windowMs);
  } catch (e) {
    return reply(503, { error: `rate limiter unavailable: ${describe(e)}` });
  }
  if (count > limit) {
    const retryAfterS = Math.ceil(((window + 1) * windowMs - nowMs) / 1000);
    return reply(
      429,
      { error: "rate limit exceeded", limit, window_ms: windowMs },
      [["retry-after", String(Math.max(1, retryAfterS))]],
    );
  }
  const token = newToken();
  try {
    cache.set(`token:${token}`, encoder.encode(caller), tokenTtlMs);
  } catch (e) {
    return reply(503, { error: `token store unavailable: ${describe(e)}` });
  }
  return reply(200, { token, remaining: limit - count, expires_in_ms: tokenTtlMs });
}
