// Response helpers of the TypeScript conformance guest (a second module, so the build's
// handling of relative imports is exercised too).
import type { Headers, Request, Response } from "flotilla:function/types@0.1.1";

const encoder = new TextEncoder();

/** UTF-8 bytes of `text`. */
export const bytes = (text: string): Uint8Array => encoder.encode(text);

/** A response with this status, body and headers. */
export function reply(status: number, body: Uint8Array = new Uint8Array(0), headers: Headers = []): Response {
  return { status, headers, body };
}

/** 200 with `body` (text is sent as UTF-8). */
export const ok = (body: string | Uint8Array): Response =>
  reply(200, typeof body === "string" ? bytes(body) : body);

/** 204, empty. */
export const none = (): Response => reply(204);

/** 200 with the value, or 204 when there is none. */
export const maybe = (value: string | Uint8Array | null): Response =>
  value === null ? none() : ok(value);

/** 200 with `true` or `false`. */
export const bool = (value: boolean): Response => ok(value ? "true" : "false");

/** The first value of header `name`, "" when absent. */
export function header(request: Request, name: string): string {
  const found = request.headers.find(([key]) => key === name);
  return found ? found[1] : "";
}

/** A failed host call: an Error carrying the interface's error variant. */
export function hostError(e: unknown): { tag: string; val?: string } | null {
  if (e instanceof Error && "payload" in e) {
    const payload = (e as FlotillaHostError<{ tag: string; val?: string }>).payload;
    if (payload && typeof payload.tag === "string") return payload;
  }
  return null;
}
