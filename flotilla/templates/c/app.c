/* __NAME__: a Flotilla function. Every invocation runs in a fresh instance: no state in globals. */
#include <stdlib.h>
#include <string.h>

#include "flotilla.h"

static const char GREETING[] = "Hello from __NAME__! You sent: ";
static const flotilla_header_t HEADERS[] = {
    {{"content-type", sizeof "content-type" - 1}, {"text/plain", sizeof "text/plain" - 1}},
};

/* Greet the caller with what they sent. */
bool flotilla_handle(const flotilla_request_t *request, flotilla_response_t *response,
                     flotilla_string_t *error) {
  size_t n = sizeof GREETING - 1;
  uint8_t *body = malloc(n + request->body.len);
  if (body == NULL) {
    *error = FLOTILLA_STR("out of memory");
    return false;
  }
  memcpy(body, GREETING, n);
  if (request->body.len > 0) memcpy(body + n, request->body.ptr, request->body.len);
  response->status = 200;
  response->headers = (flotilla_headers_t){HEADERS, 1};
  response->body = flotilla_bytes(body, n + request->body.len); /* freed with the instance */
  return true;
}
