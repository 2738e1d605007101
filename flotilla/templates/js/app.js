// __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals.

const GREETING = "Hello from __NAME__! You sent: ";

/** Greet the caller with what they sent. */
export function handle(request) {
  const body = new Uint8Array(GREETING.length + request.body.length);
  for (let i = 0; i < GREETING.length; i++) body[i] = GREETING.charCodeAt(i);
  body.set(request.body, GREETING.length);
  return { status: 200, headers: [["content-type", "text/plain"]], body };
}
