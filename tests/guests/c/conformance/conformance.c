/*
 * The C conformance guest: the protocol every language's conformance guest implements
 * (one op per request, named by the `op` header; arguments in headers a1..a4 and the body;
 * host call errors answered with status 590 and `<case>` or `<case>:<detail>`).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "flotilla.h"

typedef struct {
  const flotilla_request_t *request;
  flotilla_response_t *response;
  flotilla_string_t *error;
  flotilla_string_t a[5]; /* a[1]..a[4]; a[0] unused */
} call_t;

static void *must(void *p) {
  if (p == NULL) flotilla_out_of_memory();
  return p;
}

static bool reply(call_t *c, uint16_t status, flotilla_bytes_t body) {
  c->response->status = status;
  c->response->headers = (flotilla_headers_t){NULL, 0};
  c->response->body = body;
  return true;
}

static bool ok_text(call_t *c, const char *text) {
  size_t n = strlen(text);
  return reply(c, 200, flotilla_bytes(memcpy(must(malloc(n + 1)), text, n + 1), n));
}

static bool ok_string(call_t *c, flotilla_string_t s) {
  return reply(c, 200, flotilla_string_bytes(s));
}

static bool none(call_t *c) { return reply(c, 204, flotilla_bytes(NULL, 0)); }

static bool flag(call_t *c, bool value) { return ok_text(c, value ? "true" : "false"); }

static bool failed(call_t *c, const flotilla_error_t *e) {
  size_t name = strlen(e->name);
  size_t n = name + (e->has_detail ? 1 + e->detail.len : 0);
  char *body = must(malloc(n + 1));
  memcpy(body, e->name, name);
  if (e->has_detail) {
    body[name] = ':';
    if (e->detail.len) memcpy(body + name + 1, e->detail.ptr, e->detail.len);
  }
  return reply(c, 590, flotilla_bytes(body, n));
}

static long long number(flotilla_string_t s) {
  char *text = must(flotilla_cstr(s));
  long long value = strtoll(text, NULL, 10);
  free(text);
  return value;
}

static uint64_t ttl(flotilla_string_t s) { return s.len ? (uint64_t)number(s) : 0; }

static bool op_echo(call_t *c) {
  c->response->status = 200;
  c->response->headers = c->request->headers;
  c->response->body = c->request->body;
  return true;
}

static void *volatile blocks; /* a global list, so the allocations cannot be optimised away */

static bool op_memory(call_t *c) {
  (void)c;
  for (;;) {
    char *block = malloc(1 << 20);
    if (block == NULL) flotilla_out_of_memory();
    memset(block, 1, 1 << 20);
    *(void **)block = blocks;
    blocks = block;
  }
}

static bool op_big(call_t *c) {
  size_t n = (size_t)number(c->a[1]);
  uint8_t *body = must(malloc(n ? n : 1));
  memset(body, 'x', n);
  return reply(c, 200, flotilla_bytes(body, n));
}

static bool op_env(call_t *c) {
  char *name = must(flotilla_cstr(c->a[1]));
  const char *value = getenv(name);
  free(name);
  return value ? ok_text(c, value) : none(c);
}

static bool op_clock(call_t *c) {
  struct timespec wall, mono;
  clock_gettime(CLOCK_REALTIME, &wall);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  char text[64];
  snprintf(text, sizeof text, "%lld.%09ld %lld", (long long)wall.tv_sec, wall.tv_nsec,
           (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec);
  return ok_text(c, text);
}

static bool op_random(call_t *c) {
  uint8_t *bytes = must(malloc(16));
  if (getentropy(bytes, 16) != 0) abort();
  return reply(c, 200, flotilla_bytes(bytes, 16));
}

static bool op_file(call_t *c) {
  char *path = must(flotilla_cstr(c->a[1]));
  FILE *f = fopen(path, "r");
  free(path);
  if (f) fclose(f);
  return ok_text(c, f ? "ok" : "error");
}

static bool op_stdin(call_t *c) {
  size_t size = 0, cap = 4096;
  uint8_t *data = must(malloc(cap));
  for (;;) {
    ssize_t n = read(0, data + size, cap - size);
    if (n <= 0) break;
    size += (size_t)n;
    if (size == cap) data = must(realloc(data, cap *= 2));
  }
  return reply(c, 200, flotilla_bytes(data, size));
}

static bool op_write(call_t *c, FILE *stream) {
  fwrite(c->a[1].ptr, 1, c->a[1].len, stream);
  fputc('\n', stream);
  fflush(stream);
  return none(c);
}

static bool op_cache(call_t *c, flotilla_string_t op) {
  flotilla_error_t e;
  flotilla_bytes_t value, body = c->request->body;
  bool found, written;
  int64_t counter;
  if (flotilla_string_eq(op, "cache-get")) {
    if (!flotilla_cache_get(c->a[1], &found, &value, &e)) return failed(c, &e);
    return found ? reply(c, 200, value) : none(c);
  }
  if (flotilla_string_eq(op, "cache-set")) {
    if (!flotilla_cache_set(c->a[1], body, ttl(c->a[2]), &e)) return failed(c, &e);
    return none(c);
  }
  if (flotilla_string_eq(op, "cache-set-if-absent")) {
    if (!flotilla_cache_set_if_absent(c->a[1], body, ttl(c->a[2]), &written, &e))
      return failed(c, &e);
    return flag(c, written);
  }
  if (flotilla_string_eq(op, "cache-set-if-present")) {
    if (!flotilla_cache_set_if_present(c->a[1], body, ttl(c->a[2]), &written, &e))
      return failed(c, &e);
    return flag(c, written);
  }
  if (flotilla_string_eq(op, "cache-set-if-equal")) {
    flotilla_string_t expected;
    flotilla_header(&c->request->headers, "expected", &expected);
    if (!flotilla_cache_set_if_equal(c->a[1], flotilla_string_bytes(expected), body,
                                     ttl(c->a[2]), &written, &e))
      return failed(c, &e);
    return flag(c, written);
  }
  if (flotilla_string_eq(op, "cache-delete")) {
    if (!flotilla_cache_delete(c->a[1], &e)) return failed(c, &e);
    return none(c);
  }
  /* cache-increment */
  if (!flotilla_cache_increment(c->a[1], number(c->a[2]), ttl(c->a[3]), &counter, &e))
    return failed(c, &e);
  char text[32];
  snprintf(text, sizeof text, "%lld", (long long)counter);
  return ok_text(c, text);
}

static bool op_http(call_t *c) {
  flotilla_http_request_t request = {c->a[1], c->a[2], {NULL, 0}, c->request->body,
                                     c->a[3].len > 0, (uint32_t)number(c->a[3])};
  flotilla_http_response_t got;
  flotilla_error_t e;
  if (!flotilla_http_invoke(&request, &got, &e)) return failed(c, &e);
  c->response->status = got.status;
  c->response->headers = got.headers;
  c->response->body = got.body;
  return true;
}

static bool op_s3(call_t *c, flotilla_string_t op) {
  flotilla_error_t e;
  if (flotilla_string_eq(op, "s3-get")) {
    bool found;
    flotilla_bytes_t body;
    if (!flotilla_s3_get_object(c->a[1], c->a[2], &found, &body, &e)) return failed(c, &e);
    return found ? reply(c, 200, body) : none(c);
  }
  if (flotilla_string_eq(op, "s3-put")) {
    const flotilla_string_t *type = c->a[3].len ? &c->a[3] : NULL;
    if (!flotilla_s3_put_object(c->a[1], c->a[2], c->request->body, type, &e))
      return failed(c, &e);
    return none(c);
  }
  if (!flotilla_s3_delete_object(c->a[1], c->a[2], &e)) return failed(c, &e);
  return none(c);
}

static bool op_ddb(call_t *c, flotilla_string_t op) {
  flotilla_error_t e;
  if (flotilla_string_eq(op, "ddb-get")) {
    bool found;
    flotilla_string_t item;
    if (!flotilla_dynamodb_get_item(c->a[1], c->a[2], &found, &item, &e)) return failed(c, &e);
    return found ? ok_string(c, item) : none(c);
  }
  if (flotilla_string_eq(op, "ddb-put")) {
    if (!flotilla_dynamodb_put_item(c->a[1], c->a[2], &e)) return failed(c, &e);
    return none(c);
  }
  if (flotilla_string_eq(op, "ddb-put-if")) {
    bool written;
    if (!flotilla_dynamodb_put_item_if(c->a[1], c->a[2], c->a[3], c->a[4], &written, &e))
      return failed(c, &e);
    return flag(c, written);
  }
  if (!flotilla_dynamodb_delete_item(c->a[1], c->a[2], &e)) return failed(c, &e);
  return none(c);
}

static bool op_log(call_t *c) {
  static const char *const levels[] = {"debug", "info", "warn", "error"};
  for (int i = 0; i < 4; i++) {
    if (flotilla_string_eq(c->a[1], levels[i])) {
      flotilla_log((flotilla_log_level_t)i, c->a[2]);
      return none(c);
    }
  }
  *c->error = FLOTILLA_STR("unknown log level");
  return false;
}

/* Appends s to the growing buffer (*buf, *len). */
static void append(char **buf, size_t *len, flotilla_string_t s) {
  *buf = must(realloc(*buf, *len + s.len + 1));
  if (s.len) memcpy(*buf + *len, s.ptr, s.len);
  *len += s.len;
}

static bool op_invocation(call_t *c) {
  static const char *const kinds[] = {"sync", "job", "spawned", "scheduled"};
  char *buf = NULL, attempt[16];
  size_t len = 0;
  flotilla_string_t caller;
  flotilla_headers_t query = flotilla_invocation_query();
  append(&buf, &len, flotilla_invocation_method());
  append(&buf, &len, FLOTILLA_STR("\n"));
  append(&buf, &len, flotilla_invocation_path());
  append(&buf, &len, FLOTILLA_STR("\n"));
  for (size_t i = 0; i < query.len; i++) {
    if (i) append(&buf, &len, FLOTILLA_STR("&"));
    append(&buf, &len, query.ptr[i].name);
    append(&buf, &len, FLOTILLA_STR("="));
    append(&buf, &len, query.ptr[i].value);
  }
  append(&buf, &len, FLOTILLA_STR("\n"));
  if (flotilla_invocation_caller(&caller)) append(&buf, &len, caller);
  append(&buf, &len, FLOTILLA_STR("\n"));
  append(&buf, &len, flotilla_str(kinds[flotilla_invocation_kind() & 3]));
  snprintf(attempt, sizeof attempt, "\n%u", (unsigned)flotilla_invocation_attempt());
  append(&buf, &len, flotilla_str(attempt));
  return reply(c, 200, flotilla_bytes(buf, len));
}

static bool op_host(call_t *c, flotilla_string_t op) {
  flotilla_error_t e;
  if (flotilla_string_eq(op, "secret")) {
    bool found;
    flotilla_string_t value;
    if (!flotilla_secrets_get(c->a[1], &found, &value, &e)) return failed(c, &e);
    return found ? ok_string(c, value) : none(c);
  }
  if (flotilla_string_eq(op, "publish")) {
    if (!flotilla_topics_publish(c->a[1], c->request->body, &e)) return failed(c, &e);
    return none(c);
  }
  flotilla_string_t job;
  if (!flotilla_spawn_job(c->a[1], (flotilla_headers_t){NULL, 0}, c->request->body, &job, &e))
    return failed(c, &e);
  return ok_string(c, job);
}

static bool starts(flotilla_string_t s, const char *prefix) {
  size_t n = strlen(prefix);
  return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

bool flotilla_handle(const flotilla_request_t *request, flotilla_response_t *response,
                     flotilla_string_t *error) {
  static const char *const names[] = {"", "a1", "a2", "a3", "a4"};
  call_t c = {request, response, error, {{"", 0}}};
  flotilla_string_t op;
  flotilla_header(&request->headers, "op", &op);
  for (int i = 1; i <= 4; i++) flotilla_header(&request->headers, names[i], &c.a[i]);

  if (flotilla_string_eq(op, "echo")) return op_echo(&c);
  if (flotilla_string_eq(op, "status")) return reply(&c, (uint16_t)number(c.a[1]),
                                                      flotilla_bytes(NULL, 0));
  if (flotilla_string_eq(op, "err")) {
    *error = c.a[1];
    return false;
  }
  if (flotilla_string_eq(op, "trap")) __builtin_trap();
  if (flotilla_string_eq(op, "spin")) {
    for (volatile int spin = 0;; spin++) {
    }
  }
  if (flotilla_string_eq(op, "memory")) return op_memory(&c);
  if (flotilla_string_eq(op, "big")) return op_big(&c);
  if (flotilla_string_eq(op, "env")) return op_env(&c);
  if (flotilla_string_eq(op, "clock")) return op_clock(&c);
  if (flotilla_string_eq(op, "random")) return op_random(&c);
  if (flotilla_string_eq(op, "file")) return op_file(&c);
  if (flotilla_string_eq(op, "socket")) return ok_text(&c, "error"); /* no sockets in WASI p1 */
  if (flotilla_string_eq(op, "stdin")) return op_stdin(&c);
  if (flotilla_string_eq(op, "stdout")) return op_write(&c, stdout);
  if (flotilla_string_eq(op, "stderr")) return op_write(&c, stderr);
  if (starts(op, "cache-")) {
    static const char *const ops[] = {"cache-get", "cache-set", "cache-set-if-absent",
                                      "cache-set-if-present", "cache-set-if-equal",
                                      "cache-delete", "cache-increment"};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
      if (flotilla_string_eq(op, ops[i])) return op_cache(&c, op);
  }
  if (flotilla_string_eq(op, "http")) return op_http(&c);
  if (flotilla_string_eq(op, "s3-get") || flotilla_string_eq(op, "s3-put") ||
      flotilla_string_eq(op, "s3-delete"))
    return op_s3(&c, op);
  if (flotilla_string_eq(op, "ddb-get") || flotilla_string_eq(op, "ddb-put") ||
      flotilla_string_eq(op, "ddb-put-if") || flotilla_string_eq(op, "ddb-delete"))
    return op_ddb(&c, op);
  if (flotilla_string_eq(op, "log")) return op_log(&c);
  if (flotilla_string_eq(op, "invocation")) return op_invocation(&c);
  if (flotilla_string_eq(op, "secret") || flotilla_string_eq(op, "publish") ||
      flotilla_string_eq(op, "spawn"))
    return op_host(&c, op);
  return reply(&c, 400, flotilla_bytes("unknown op", 10));
}
