/*
 * flotilla.h: Flotilla's `function` world (flotilla:function@0.1.1) for C guests.
 *
 * A C function defines
 *
 *     bool flotilla_handle(const flotilla_request_t *request,
 *                          flotilla_response_t *response, flotilla_string_t *error);
 *
 * filling `*response` and returning true, or setting `*error` and returning false (the
 * caller then gets a function error). This header declares the world's imports at the
 * canonical ABI (hand-written: wit-bindgen is not needed) and wraps each one in a
 * function that returns true on success and fills a flotilla_error_t on failure.
 *
 * Strings are (pointer, length) pairs, never NUL-terminated. Everything the host hands
 * over (the request, host call results) lives in the guest's memory until the invocation
 * ends; the response must stay valid after flotilla_handle returns: use malloc'ed or static
 * memory, never a local array. There is no need to free anything: every invocation runs in
 * a fresh instance that is discarded afterwards.
 *
 * Build with `flotilla build DIR` (flotilla/build/c.py), which compiles flotilla.c (the
 * definitions below, under FLOTILLA_IMPLEMENTATION) with your *.c files:
 * clang-22 --target=wasm32-wasi -mexec-model=reactor, then `wasm-tools component embed`
 * and `component new` with the WASI reactor adapter.
 */
#ifndef FLOTILLA_H
#define FLOTILLA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#if !defined(__wasm32__)
#error "flotilla.h targets wasm32 (clang --target=wasm32-wasi)"
#endif

/* ---- types ------------------------------------------------------------------------- */

/** A WIT `string`: UTF-8, not NUL-terminated. */
typedef struct {
  const char *ptr;
  size_t len;
} flotilla_string_t;

/** A WIT `list<u8>`. */
typedef struct {
  const uint8_t *ptr;
  size_t len;
} flotilla_bytes_t;

/** One header: a `tuple<string, string>`. */
typedef struct {
  flotilla_string_t name;
  flotilla_string_t value;
} flotilla_header_t;

/** `headers`: ordered (name, value) pairs; names may repeat. */
typedef struct {
  const flotilla_header_t *ptr;
  size_t len;
} flotilla_headers_t;

/** One invocation's input (`types.request`). */
typedef struct {
  flotilla_string_t invocation_id;
  flotilla_string_t function_name;
  flotilla_headers_t headers;
  flotilla_bytes_t body;
} flotilla_request_t;

/** One invocation's output (`types.response`); status 100-599. */
typedef struct {
  uint16_t status;
  flotilla_headers_t headers;
  flotilla_bytes_t body;
} flotilla_response_t;

/** An outbound HTTP request (`http.request`); timeout_ms is used when has_timeout. */
typedef struct {
  flotilla_string_t method;
  flotilla_string_t url;
  flotilla_headers_t headers;
  flotilla_bytes_t body;
  bool has_timeout;
  uint32_t timeout_ms;
} flotilla_http_request_t;

/** The upstream's response (`http.response`). */
typedef struct {
  uint16_t status;
  flotilla_headers_t headers;
  flotilla_bytes_t body;
} flotilla_http_response_t;

/**
 * Why a host call failed: the interface's `error` variant. `code` is the case's index
 * (FLOTILLA_<INTERFACE>_<CASE>), `name` the case in WIT kebab-case ("invalid-argument"),
 * `detail` its message when `has_detail` (http's `timeout` and `too-large` carry none).
 */
typedef struct {
  uint8_t code;
  const char *name;
  bool has_detail;
  flotilla_string_t detail;
} flotilla_error_t;

enum { FLOTILLA_CACHE_UNAVAILABLE, FLOTILLA_CACHE_INVALID_ARGUMENT };
enum {
  FLOTILLA_HTTP_DENIED,
  FLOTILLA_HTTP_TIMEOUT,
  FLOTILLA_HTTP_CONNECTION,
  FLOTILLA_HTTP_INVALID_REQUEST,
  FLOTILLA_HTTP_TOO_LARGE,
};
enum { FLOTILLA_S3_DENIED, FLOTILLA_S3_UNAVAILABLE, FLOTILLA_S3_INVALID_ARGUMENT };
enum { FLOTILLA_DYNAMODB_DENIED, FLOTILLA_DYNAMODB_UNAVAILABLE, FLOTILLA_DYNAMODB_INVALID_ARGUMENT };
enum { FLOTILLA_SECRETS_UNAVAILABLE };
enum { FLOTILLA_TOPICS_DENIED, FLOTILLA_TOPICS_UNAVAILABLE, FLOTILLA_TOPICS_INVALID_ARGUMENT };
enum { FLOTILLA_SPAWN_DENIED, FLOTILLA_SPAWN_UNAVAILABLE, FLOTILLA_SPAWN_INVALID_ARGUMENT };

/** `log.level`. */
typedef enum {
  FLOTILLA_LOG_DEBUG,
  FLOTILLA_LOG_INFO,
  FLOTILLA_LOG_WARN,
  FLOTILLA_LOG_ERROR,
} flotilla_log_level_t;

/** `invocation.start-kind`. */
typedef enum {
  FLOTILLA_START_SYNC,
  FLOTILLA_START_JOB,
  FLOTILLA_START_SPAWNED,
  FLOTILLA_START_SCHEDULED,
} flotilla_start_kind_t;

/* ---- the function you write ------------------------------------------------------- */

/** Handles one invocation: fill `*response` and return true, or set `*error`, false. */
bool flotilla_handle(const flotilla_request_t *request, flotilla_response_t *response,
                     flotilla_string_t *error);

/* ---- helpers ----------------------------------------------------------------------- */

/** A string literal as a flotilla_string_t. */
#define FLOTILLA_STR(literal) ((flotilla_string_t){(literal), sizeof(literal) - 1})

/** A NUL-terminated string as a flotilla_string_t (not copied). */
static inline flotilla_string_t flotilla_str(const char *text) {
  return (flotilla_string_t){text, text ? strlen(text) : 0};
}

/** Bytes as a flotilla_bytes_t (not copied). */
static inline flotilla_bytes_t flotilla_bytes(const void *data, size_t len) {
  return (flotilla_bytes_t){(const uint8_t *)data, len};
}

/** A string's bytes as a flotilla_bytes_t (not copied). */
static inline flotilla_bytes_t flotilla_string_bytes(flotilla_string_t text) {
  return (flotilla_bytes_t){(const uint8_t *)text.ptr, text.len};
}

/** Bytes viewed as a string (not copied; the bytes should be UTF-8). */
static inline flotilla_string_t flotilla_bytes_string(flotilla_bytes_t data) {
  return (flotilla_string_t){(const char *)data.ptr, data.len};
}

/** Whether `a` holds exactly the NUL-terminated `text`. */
static inline bool flotilla_string_eq(flotilla_string_t a, const char *text) {
  size_t n = strlen(text);
  return a.len == n && (n == 0 || memcmp(a.ptr, text, n) == 0);
}

/** A malloc'ed NUL-terminated copy of `text` (NULL when out of memory). */
char *flotilla_cstr(flotilla_string_t text);

/** The first value of header `name` (exact match) into *value; false when absent. */
bool flotilla_header(const flotilla_headers_t *headers, const char *name,
                     flotilla_string_t *value);

/** Writes "out of memory" to stderr and traps (the sandbox reports memory_limit). */
_Noreturn void flotilla_out_of_memory(void);

/* ---- host calls: true on success, else *error is filled ---------------------------- */

/* cache: a key-value cache (Redis), namespaced per function; ttl_ms 0 = no expiry. */
bool flotilla_cache_get(flotilla_string_t key, bool *found, flotilla_bytes_t *value,
                        flotilla_error_t *error);
bool flotilla_cache_set(flotilla_string_t key, flotilla_bytes_t value, uint64_t ttl_ms,
                        flotilla_error_t *error);
bool flotilla_cache_set_if_absent(flotilla_string_t key, flotilla_bytes_t value,
                                  uint64_t ttl_ms, bool *written, flotilla_error_t *error);
bool flotilla_cache_set_if_present(flotilla_string_t key, flotilla_bytes_t value,
                                   uint64_t ttl_ms, bool *written, flotilla_error_t *error);
bool flotilla_cache_set_if_equal(flotilla_string_t key, flotilla_bytes_t expected,
                                 flotilla_bytes_t value, uint64_t ttl_ms, bool *written,
                                 flotilla_error_t *error);
bool flotilla_cache_delete(flotilla_string_t key, flotilla_error_t *error);
bool flotilla_cache_increment(flotilla_string_t key, int64_t delta, uint64_t ttl_ms,
                              int64_t *value, flotilla_error_t *error);

/* http: outbound requests to the function's allowed_hosts. */
bool flotilla_http_invoke(const flotilla_http_request_t *request,
                          flotilla_http_response_t *response, flotilla_error_t *error);

/* s3: objects in the function's s3_buckets; content_type may be NULL. */
bool flotilla_s3_get_object(flotilla_string_t bucket, flotilla_string_t key, bool *found,
                            flotilla_bytes_t *body, flotilla_error_t *error);
bool flotilla_s3_put_object(flotilla_string_t bucket, flotilla_string_t key,
                            flotilla_bytes_t body, const flotilla_string_t *content_type,
                            flotilla_error_t *error);
bool flotilla_s3_delete_object(flotilla_string_t bucket, flotilla_string_t key,
                               flotilla_error_t *error);

/* dynamodb: items of the function's dynamodb_tables, as DynamoDB-JSON text. */
bool flotilla_dynamodb_get_item(flotilla_string_t table, flotilla_string_t key, bool *found,
                                flotilla_string_t *item, flotilla_error_t *error);
bool flotilla_dynamodb_put_item(flotilla_string_t table, flotilla_string_t item,
                                flotilla_error_t *error);
bool flotilla_dynamodb_delete_item(flotilla_string_t table, flotilla_string_t key,
                                   flotilla_error_t *error);
bool flotilla_dynamodb_put_item_if(flotilla_string_t table, flotilla_string_t item,
                                   flotilla_string_t condition, flotilla_string_t values,
                                   bool *written, flotilla_error_t *error);

/* log: structured logs attached to the invocation's result. */
void flotilla_log(flotilla_log_level_t level, flotilla_string_t message);

/* invocation: how this invocation was called. */
flotilla_string_t flotilla_invocation_method(void);
flotilla_string_t flotilla_invocation_path(void);
flotilla_headers_t flotilla_invocation_query(void);
bool flotilla_invocation_caller(flotilla_string_t *caller); /* false: no caller */
flotilla_start_kind_t flotilla_invocation_kind(void);
uint32_t flotilla_invocation_attempt(void);
uint32_t flotilla_invocation_remaining_ms(void);

/* secrets, topics, spawn. */
bool flotilla_secrets_get(flotilla_string_t name, bool *found, flotilla_string_t *value,
                          flotilla_error_t *error);
bool flotilla_topics_publish(flotilla_string_t topic, flotilla_bytes_t message,
                             flotilla_error_t *error);
bool flotilla_spawn_job(flotilla_string_t function, flotilla_headers_t headers,
                        flotilla_bytes_t body, flotilla_string_t *job_id,
                        flotilla_error_t *error);

/* ==== definitions (compiled once, by flotilla.c) ==================================== */
#ifdef FLOTILLA_IMPLEMENTATION

#include <stdio.h>
#include <stdlib.h>

#define FLOTILLA_IMPORT(iface, name) \
  __attribute__((import_module("flotilla:function/" iface "@0.1.1"), import_name(name)))
#define FLOTILLA_EXPORT(name) __attribute__((export_name(name)))
#define FLOTILLA_P(s) ((int32_t)(uintptr_t)(s).ptr), ((int32_t)(s).len)

/* The canonical ABI at wasm32: every import below takes its parameters flattened, and
 * results that do not fit one value in a return area the caller passes last. */
FLOTILLA_IMPORT("cache", "get") void flotilla__cache_get(int32_t, int32_t, void *);
FLOTILLA_IMPORT("cache", "set")
void flotilla__cache_set(int32_t, int32_t, int32_t, int32_t, int64_t, void *);
FLOTILLA_IMPORT("cache", "set-if-absent")
void flotilla__cache_set_if_absent(int32_t, int32_t, int32_t, int32_t, int64_t, void *);
FLOTILLA_IMPORT("cache", "set-if-present")
void flotilla__cache_set_if_present(int32_t, int32_t, int32_t, int32_t, int64_t, void *);
FLOTILLA_IMPORT("cache", "set-if-equal")
void flotilla__cache_set_if_equal(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t,
                                  int64_t, void *);
FLOTILLA_IMPORT("cache", "delete") void flotilla__cache_delete(int32_t, int32_t, void *);
FLOTILLA_IMPORT("cache", "increment")
void flotilla__cache_increment(int32_t, int32_t, int64_t, int64_t, void *);
FLOTILLA_IMPORT("http", "invoke")
void flotilla__http_invoke(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t,
                           int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("s3", "get-object")
void flotilla__s3_get_object(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("s3", "put-object")
void flotilla__s3_put_object(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, int32_t,
                             int32_t, int32_t, void *);
FLOTILLA_IMPORT("s3", "delete-object")
void flotilla__s3_delete_object(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("dynamodb", "get-item")
void flotilla__dynamodb_get_item(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("dynamodb", "put-item")
void flotilla__dynamodb_put_item(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("dynamodb", "delete-item")
void flotilla__dynamodb_delete_item(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("dynamodb", "put-item-if")
void flotilla__dynamodb_put_item_if(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t,
                                    int32_t, int32_t, void *);
FLOTILLA_IMPORT("log", "log") void flotilla__log(int32_t, int32_t, int32_t);
FLOTILLA_IMPORT("invocation", "method") void flotilla__invocation_method(void *);
FLOTILLA_IMPORT("invocation", "path") void flotilla__invocation_path(void *);
FLOTILLA_IMPORT("invocation", "query") void flotilla__invocation_query(void *);
FLOTILLA_IMPORT("invocation", "caller") void flotilla__invocation_caller(void *);
FLOTILLA_IMPORT("invocation", "kind") int32_t flotilla__invocation_kind(void);
FLOTILLA_IMPORT("invocation", "attempt") int32_t flotilla__invocation_attempt(void);
FLOTILLA_IMPORT("invocation", "remaining-ms") int32_t flotilla__invocation_remaining_ms(void);
FLOTILLA_IMPORT("secrets", "get") void flotilla__secrets_get(int32_t, int32_t, void *);
FLOTILLA_IMPORT("topics", "publish")
void flotilla__topics_publish(int32_t, int32_t, int32_t, int32_t, void *);
FLOTILLA_IMPORT("spawn", "job")
void flotilla__spawn_job(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t, void *);

/* Return areas. Discriminants are u8; a payload sits at its alignment (4, or 8 for an
 * s64). Every interface's error variant is (u8 case, string at +4). */
typedef struct {
  uint8_t tag; /* 0 ok, 1 err */
  union {
    struct {
      uint8_t some;
      flotilla_string_t value; /* option<list<u8>> / option<string>, same layout */
    } ok;
    uint8_t flag; /* result<bool, error> */
    flotilla_string_t string; /* result<string, error> */
    struct {
      uint8_t case_;
      flotilla_string_t detail;
    } err;
  } u;
} flotilla__area_t;

typedef struct {
  uint8_t tag;
  union {
    int64_t value;
    struct {
      uint8_t case_;
      flotilla_string_t detail;
    } err;
  } u;
} flotilla__area64_t; /* result<s64, error> */

typedef struct {
  uint8_t tag;
  union {
    struct {
      uint16_t status;
      flotilla_headers_t headers;
      flotilla_bytes_t body;
    } ok;
    struct {
      uint8_t case_;
      flotilla_string_t detail;
    } err;
  } u;
} flotilla__http_area_t; /* result<http.response, http.error> */

_Static_assert(sizeof(flotilla__area_t) == 16, "result area layout");
_Static_assert(offsetof(flotilla__area64_t, u) == 8, "result<s64> layout");
_Static_assert(sizeof(flotilla__http_area_t) == 24, "http result layout");

static const char *const flotilla__cache_cases[] = {"unavailable", "invalid-argument"};
static const char *const flotilla__http_cases[] = {"denied", "timeout", "connection",
                                                   "invalid-request", "too-large"};
static const char *const flotilla__three_cases[] = {"denied", "unavailable",
                                                    "invalid-argument"};
static const char *const flotilla__secrets_cases[] = {"unavailable"};

/* An error variant's case list: names in WIT order, and which cases carry no message. */
typedef struct {
  const char *const *names;
  size_t count;
  unsigned bare; /* bit i set: case i has no payload */
} flotilla__cases_t;

static const flotilla__cases_t flotilla__cache = {flotilla__cache_cases, 2, 0};
static const flotilla__cases_t flotilla__http = {flotilla__http_cases, 5, 1u << 1 | 1u << 4};
static const flotilla__cases_t flotilla__three = {flotilla__three_cases, 3, 0};
static const flotilla__cases_t flotilla__secrets = {flotilla__secrets_cases, 1, 0};

static bool flotilla__fail(flotilla_error_t *error, uint8_t case_, flotilla_string_t detail,
                           const flotilla__cases_t *cases) {
  if (error != NULL) {
    error->code = case_;
    error->name = case_ < cases->count ? cases->names[case_] : "unknown";
    error->has_detail = case_ >= 32 || !(cases->bare & (1u << case_));
    error->detail = error->has_detail ? detail : (flotilla_string_t){"", 0};
  }
  return false;
}

static bool flotilla__unit(const flotilla__area_t *area, flotilla_error_t *error,
                           const flotilla__cases_t *cases) {
  if (area->tag == 0) return true;
  return flotilla__fail(error, area->u.err.case_, area->u.err.detail, cases);
}

static bool flotilla__option(const flotilla__area_t *area, bool *found,
                             flotilla_string_t *value, flotilla_error_t *error,
                             const flotilla__cases_t *cases) {
  if (area->tag != 0) return flotilla__fail(error, area->u.err.case_, area->u.err.detail, cases);
  *found = area->u.ok.some != 0;
  *value = *found ? area->u.ok.value : (flotilla_string_t){"", 0};
  return true;
}

static bool flotilla__flag(const flotilla__area_t *area, bool *flag, flotilla_error_t *error,
                           const flotilla__cases_t *cases) {
  if (area->tag != 0) return flotilla__fail(error, area->u.err.case_, area->u.err.detail, cases);
  *flag = area->u.flag != 0;
  return true;
}

bool flotilla_cache_get(flotilla_string_t key, bool *found, flotilla_bytes_t *value,
                        flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla_string_t raw;
  flotilla__cache_get(FLOTILLA_P(key), &area);
  if (!flotilla__option(&area, found, &raw, error, &flotilla__cache))
    return false;
  *value = flotilla_string_bytes(raw);
  return true;
}

bool flotilla_cache_set(flotilla_string_t key, flotilla_bytes_t value, uint64_t ttl_ms,
                        flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__cache_set(FLOTILLA_P(key), FLOTILLA_P(value), (int64_t)ttl_ms, &area);
  return flotilla__unit(&area, error, &flotilla__cache);
}

bool flotilla_cache_set_if_absent(flotilla_string_t key, flotilla_bytes_t value,
                                  uint64_t ttl_ms, bool *written, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__cache_set_if_absent(FLOTILLA_P(key), FLOTILLA_P(value), (int64_t)ttl_ms, &area);
  return flotilla__flag(&area, written, error, &flotilla__cache);
}

bool flotilla_cache_set_if_present(flotilla_string_t key, flotilla_bytes_t value,
                                   uint64_t ttl_ms, bool *written, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__cache_set_if_present(FLOTILLA_P(key), FLOTILLA_P(value), (int64_t)ttl_ms, &area);
  return flotilla__flag(&area, written, error, &flotilla__cache);
}

bool flotilla_cache_set_if_equal(flotilla_string_t key, flotilla_bytes_t expected,
                                 flotilla_bytes_t value, uint64_t ttl_ms, bool *written,
                                 flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__cache_set_if_equal(FLOTILLA_P(key), FLOTILLA_P(expected), FLOTILLA_P(value),
                               (int64_t)ttl_ms, &area);
  return flotilla__flag(&area, written, error, &flotilla__cache);
}

bool flotilla_cache_delete(flotilla_string_t key, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__cache_delete(FLOTILLA_P(key), &area);
  return flotilla__unit(&area, error, &flotilla__cache);
}

bool flotilla_cache_increment(flotilla_string_t key, int64_t delta, uint64_t ttl_ms,
                              int64_t *value, flotilla_error_t *error) {
  flotilla__area64_t area;
  flotilla__cache_increment(FLOTILLA_P(key), delta, (int64_t)ttl_ms, &area);
  if (area.tag != 0) return flotilla__fail(error, area.u.err.case_, area.u.err.detail, &flotilla__cache);
  *value = area.u.value;
  return true;
}

bool flotilla_http_invoke(const flotilla_http_request_t *request,
                          flotilla_http_response_t *response, flotilla_error_t *error) {
  flotilla__http_area_t area;
  flotilla__http_invoke(FLOTILLA_P(request->method), FLOTILLA_P(request->url),
                        FLOTILLA_P(request->headers), FLOTILLA_P(request->body),
                        request->has_timeout ? 1 : 0, (int32_t)request->timeout_ms, &area);
  if (area.tag != 0) return flotilla__fail(error, area.u.err.case_, area.u.err.detail, &flotilla__http);
  response->status = area.u.ok.status;
  response->headers = area.u.ok.headers;
  response->body = area.u.ok.body;
  return true;
}

bool flotilla_s3_get_object(flotilla_string_t bucket, flotilla_string_t key, bool *found,
                            flotilla_bytes_t *body, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla_string_t raw;
  flotilla__s3_get_object(FLOTILLA_P(bucket), FLOTILLA_P(key), &area);
  if (!flotilla__option(&area, found, &raw, error, &flotilla__three))
    return false;
  *body = flotilla_string_bytes(raw);
  return true;
}

bool flotilla_s3_put_object(flotilla_string_t bucket, flotilla_string_t key,
                            flotilla_bytes_t body, const flotilla_string_t *content_type,
                            flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla_string_t type = content_type ? *content_type : (flotilla_string_t){"", 0};
  flotilla__s3_put_object(FLOTILLA_P(bucket), FLOTILLA_P(key), FLOTILLA_P(body),
                          content_type ? 1 : 0, FLOTILLA_P(type), &area);
  return flotilla__unit(&area, error, &flotilla__three);
}

bool flotilla_s3_delete_object(flotilla_string_t bucket, flotilla_string_t key,
                               flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__s3_delete_object(FLOTILLA_P(bucket), FLOTILLA_P(key), &area);
  return flotilla__unit(&area, error, &flotilla__three);
}

bool flotilla_dynamodb_get_item(flotilla_string_t table, flotilla_string_t key, bool *found,
                                flotilla_string_t *item, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__dynamodb_get_item(FLOTILLA_P(table), FLOTILLA_P(key), &area);
  return flotilla__option(&area, found, item, error, &flotilla__three);
}

bool flotilla_dynamodb_put_item(flotilla_string_t table, flotilla_string_t item,
                                flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__dynamodb_put_item(FLOTILLA_P(table), FLOTILLA_P(item), &area);
  return flotilla__unit(&area, error, &flotilla__three);
}

bool flotilla_dynamodb_delete_item(flotilla_string_t table, flotilla_string_t key,
                                   flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__dynamodb_delete_item(FLOTILLA_P(table), FLOTILLA_P(key), &area);
  return flotilla__unit(&area, error, &flotilla__three);
}

bool flotilla_dynamodb_put_item_if(flotilla_string_t table, flotilla_string_t item,
                                   flotilla_string_t condition, flotilla_string_t values,
                                   bool *written, flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__dynamodb_put_item_if(FLOTILLA_P(table), FLOTILLA_P(item), FLOTILLA_P(condition),
                                 FLOTILLA_P(values), &area);
  return flotilla__flag(&area, written, error, &flotilla__three);
}

void flotilla_log(flotilla_log_level_t level, flotilla_string_t message) {
  flotilla__log((int32_t)level, FLOTILLA_P(message));
}

flotilla_string_t flotilla_invocation_method(void) {
  flotilla_string_t out;
  flotilla__invocation_method(&out);
  return out;
}

flotilla_string_t flotilla_invocation_path(void) {
  flotilla_string_t out;
  flotilla__invocation_path(&out);
  return out;
}

flotilla_headers_t flotilla_invocation_query(void) {
  flotilla_headers_t out;
  flotilla__invocation_query(&out);
  return out;
}

bool flotilla_invocation_caller(flotilla_string_t *caller) {
  struct {
    uint8_t some;
    flotilla_string_t value;
  } area;
  flotilla__invocation_caller(&area);
  *caller = area.some ? area.value : (flotilla_string_t){"", 0};
  return area.some != 0;
}

flotilla_start_kind_t flotilla_invocation_kind(void) {
  return (flotilla_start_kind_t)flotilla__invocation_kind();
}

uint32_t flotilla_invocation_attempt(void) { return (uint32_t)flotilla__invocation_attempt(); }

uint32_t flotilla_invocation_remaining_ms(void) {
  return (uint32_t)flotilla__invocation_remaining_ms();
}

bool flotilla_secrets_get(flotilla_string_t name, bool *found, flotilla_string_t *value,
                          flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__secrets_get(FLOTILLA_P(name), &area);
  return flotilla__option(&area, found, value, error, &flotilla__secrets);
}

bool flotilla_topics_publish(flotilla_string_t topic, flotilla_bytes_t message,
                             flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__topics_publish(FLOTILLA_P(topic), FLOTILLA_P(message), &area);
  return flotilla__unit(&area, error, &flotilla__three);
}

bool flotilla_spawn_job(flotilla_string_t function, flotilla_headers_t headers,
                        flotilla_bytes_t body, flotilla_string_t *job_id,
                        flotilla_error_t *error) {
  flotilla__area_t area;
  flotilla__spawn_job(FLOTILLA_P(function), FLOTILLA_P(headers), FLOTILLA_P(body), &area);
  if (area.tag != 0) return flotilla__fail(error, area.u.err.case_, area.u.err.detail, &flotilla__three);
  *job_id = area.u.string;
  return true;
}

char *flotilla_cstr(flotilla_string_t text) {
  char *out = malloc(text.len + 1);
  if (out == NULL) return NULL;
  if (text.len) memcpy(out, text.ptr, text.len);
  out[text.len] = '\0';
  return out;
}

bool flotilla_header(const flotilla_headers_t *headers, const char *name,
                     flotilla_string_t *value) {
  for (size_t i = 0; i < headers->len; i++) {
    if (flotilla_string_eq(headers->ptr[i].name, name)) {
      *value = headers->ptr[i].value;
      return true;
    }
  }
  *value = (flotilla_string_t){"", 0};
  return false;
}

_Noreturn void flotilla_out_of_memory(void) {
  static const char message[] = "out of memory\n";
  fwrite(message, 1, sizeof(message) - 1, stderr);
  fflush(stderr);
  __builtin_trap();
}

/* The allocator the host uses to hand over arguments and host call results. */
FLOTILLA_EXPORT("cabi_realloc")
void *cabi_realloc(void *ptr, size_t old_size, size_t align, size_t new_size) {
  (void)old_size;
  if (new_size == 0) return (void *)align; /* any aligned, non-null pointer will do */
  void *out = realloc(ptr, new_size); /* malloc aligns to 16, enough for every type */
  if (out == NULL) flotilla_out_of_memory();
  return out;
}

/* result<response, string>: tag at 0; ok: status at 4, headers at 8, body at 16;
 * err: message at 4. */
typedef struct {
  uint8_t tag;
  union {
    flotilla_response_t ok;
    flotilla_string_t err;
  } u;
} flotilla__handle_area_t;
_Static_assert(sizeof(flotilla__handle_area_t) == 24, "handle result layout");

static flotilla__handle_area_t flotilla__handle_result;

FLOTILLA_EXPORT("handle")
flotilla__handle_area_t *flotilla__handle(const char *id, size_t id_len, const char *fn,
                                          size_t fn_len, const flotilla_header_t *headers,
                                          size_t headers_len, const uint8_t *body,
                                          size_t body_len) {
  flotilla_request_t request = {
      {id, id_len}, {fn, fn_len}, {headers, headers_len}, {body, body_len}};
  flotilla_response_t response = {500, {NULL, 0}, {NULL, 0}};
  flotilla_string_t error = FLOTILLA_STR("flotilla_handle failed");
  if (flotilla_handle(&request, &response, &error)) {
    flotilla__handle_result.tag = 0;
    flotilla__handle_result.u.ok = response;
  } else {
    flotilla__handle_result.tag = 1;
    flotilla__handle_result.u.err = error;
  }
  return &flotilla__handle_result;
}

/* Nothing to free: the instance is discarded after the invocation. */
FLOTILLA_EXPORT("cabi_post_handle") void flotilla__post_handle(flotilla__handle_area_t *r) {
  (void)r;
}

#endif /* FLOTILLA_IMPLEMENTATION */

#ifdef __cplusplus
}
#endif

#endif /* FLOTILLA_H */
