// Echo: returns the request's body and headers with status 200.

/** The function's entry point: reply with the request's own headers and body. */
export function handle(request) {
  return { status: 200, headers: request.headers, body: request.body };
}
