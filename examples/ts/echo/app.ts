// Echo: returns the request's body and headers with status 200.
import type { Request, Response } from "flotilla:function/types@0.1.1";

/** The function's entry point: reply with the request's own headers and body. */
export function handle(request: Request): Response {
  return { status: 200, headers: request.headers, body: request.body };
}
