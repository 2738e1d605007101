/* Echo: returns the request's body and headers with status 200. */
#include "flotilla.h"

/* The function's entry point: reply with the request's own headers and body. */
bool flotilla_handle(const flotilla_request_t *request, flotilla_response_t *response,
                     flotilla_string_t *error) {
  (void)error;
  response->status = 200;
  response->headers = request->headers; /* the request's memory outlives the call */
  response->body = request->body;
  return true;
}
