// __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals.

/** Greet the caller with what they sent. */
export function handle(request) {
  const greeting = new TextEncoder().encode("Hello from __NAME__! You sent: ");
  const body = new Uint8Array(greeting.length + request.body.length);
  body.set(greeting);
  body.set(request.body, greeting.length);
  return { status: 200, headers: [["content-type", "text/plain"]], body };
}
