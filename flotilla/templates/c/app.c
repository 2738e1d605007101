// __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals.
#include <stdlib.h>
#include <string.h>

#include "flotilla.h"

static const char GREETING[] = "Hello from __NAME__! You sent: ";

// Greet the caller with what they sent.
bool flotilla_handle(const flotilla_request_t *request, flotilla_response_t *response,
                     flotilla_string_t *error) {
  size_t n = sizeof GREETING - 1;
  uint8_t *body = malloc(n + request->body.len);
  memcpy(body, GREETING, n);
  memcpy(body + n, request->body.ptr, request->body.len);
  response->status = 200;
  flotilla_response_add_header(response, "content-type", "text/plain");
  response->body.ptr = body;
  response->body.len = n + request->body.len;
  return true;
}
