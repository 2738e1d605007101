// __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals.
import type { Request, Response } from "flotilla:function/types@0.1.1";

/** Greet the caller with what they sent. */
export function handle(request: Request): Response {
  const greeting = new TextEncoder().encode("Hello from __NAME__! You sent: ");
  const body = new Uint8Array(greeting.length + request.body.length);
  body.set(greeting);
  body.set(request.body, greeting.length);
  return { status: 200, headers: [["content-type", "text/plain"]], body };
}
