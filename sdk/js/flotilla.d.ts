// Type declarations of Flotilla's `function` world (flotilla:function@0.1.1) for JavaScript/TypeScript
// guests. Generated from wit/ by sdk/js/gen_dts.py: do not edit by hand.
//
// A guest module exports `handle(request: Request): Response`; throwing a string (or an
// Error) from it answers the caller with a function error. Host calls that fail throw a
// FlotillaHostError whose `payload` is the interface's `Error` variant.

/** What a failed host call throws: an Error whose `payload` is the interface's variant. */
interface FlotillaHostError<E> extends Error {
  payload: E;
}

/** The signature of the `handle` export every guest module defines. */
type FlotillaHandler = (
  request: import("flotilla:function/types@0.1.1").Request,
) => import("flotilla:function/types@0.1.1").Response;

/** Types shared by the function's entry point and the host interfaces. */
declare module "flotilla:function/types@0.1.1" {
  /** HTTP-style headers as ordered (name, value) pairs; names may repeat. */
  export type Headers = Array<[string, string]>;
  /** One invocation's input. */
  export interface Request {
    /** Unique id of this invocation (also in `FLOTILLA_INVOCATION_ID`). */
    invocationId: string;
    /** Name of the deployed function being invoked. */
    functionName: string;
    /** Headers the caller sent with the invocation. */
    headers: Headers;
    /** Raw request body, at most the function's `max_body_bytes`. */
    body: Uint8Array;
  }
  /** One invocation's output, returned to the caller as-is. */
  export interface Response {
    /** HTTP status code the caller sees (100-599). */
    status: number;
    /** Response headers. */
    headers: Headers;
    /** Raw response body, at most the function's `max_body_bytes`. */
    body: Uint8Array;
  }
}

/**
 * A key-value cache (Redis-backed), namespaced per function.
 *
 * Keys are prefixed with the function's `cache_namespace` by the host, so a
 * function can only see its own keys. Keys are at most 1 KiB, values at most
 * 1 MiB.
 */
declare module "flotilla:function/cache@0.1.1" {
  /** Why a cache call failed. */
  export type Error =
    /** The cache backend could not be reached; the invocation goes on. */
    | { tag: "unavailable"; val: string }
    /** The key or value broke a limit (key over 1 KiB, value over 1 MiB, ...). */
    | { tag: "invalid-argument"; val: string };
  /**
   * Reads a value; `none` when the key is absent or expired.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function get(key: string): Uint8Array | null;
  /**
   * Writes a value; `ttl-ms` of 0 means no expiry.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function set(key: string, value: Uint8Array, ttlMs: number): void;
  /**
   * Writes a value only if the key is absent (SET NX PX); true when written.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function setIfAbsent(key: string, value: Uint8Array, ttlMs: number): boolean;
  /**
   * Removes a key; removing an absent key is not an error.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  function _delete(key: string): void;
  export { _delete as delete };
  /**
   * Atomically adds `delta` to an integer counter and returns the new value.
   * A `ttl-ms` above 0 sets the expiry when the counter is created.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function increment(key: string, delta: number, ttlMs: number): number;
  /**
   * Writes `value` only when the key's current value equals `expected` (atomically);
   * true when written. An absent key never equals anything.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function setIfEqual(key: string, expected: Uint8Array, value: Uint8Array, ttlMs: number): boolean;
  /**
   * Writes `value` only when the key exists; true when written.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function setIfPresent(key: string, value: Uint8Array, ttlMs: number): boolean;
  const cache: {
    get: typeof get;
    set: typeof set;
    setIfAbsent: typeof setIfAbsent;
    delete: typeof _delete;
    increment: typeof increment;
    setIfEqual: typeof setIfEqual;
    setIfPresent: typeof setIfPresent;
  };
  export default cache;
}

/** Outbound HTTP, limited to the function's `allowed_hosts`. */
declare module "flotilla:function/http@0.1.1" {
  export type Headers = import("flotilla:function/types@0.1.1").Headers;
  /** An outbound HTTP request. */
  export interface Request {
    /** HTTP method, e.g. "GET" or "POST". */
    method: string;
    /** Absolute http:// or https:// URL; its host must be allowed. */
    url: string;
    /** Request headers. */
    headers: Headers;
    /** Request body (empty for none). */
    body: Uint8Array;
    /** Per-request timeout; capped by the invocation's remaining time. */
    timeoutMs: number | null;
  }
  /** The upstream's response. */
  export interface Response {
    /** HTTP status code. */
    status: number;
    /** Response headers. */
    headers: Headers;
    /** Response body, at most the function's `max_body_bytes`. */
    body: Uint8Array;
  }
  /** Why an outbound request failed. */
  export type Error =
    /** The host is not in `allowed_hosts`, or resolves to a forbidden address. */
    | { tag: "denied"; val: string }
    /** No response within the timeout (or the invocation's remaining time). */
    | { tag: "timeout" }
    /** The connection could not be made or broke. */
    | { tag: "connection"; val: string }
    /** The request was malformed (bad URL, method or header). */
    | { tag: "invalid-request"; val: string }
    /** The response body exceeded the function's `max_body_bytes`. */
    | { tag: "too-large" };
  /**
   * Sends one request and waits for the whole response.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function invoke(request: Request): Response;
  const http: {
    invoke: typeof invoke;
  };
  export default http;
}

/** Amazon S3 object storage, limited to the function's `s3_buckets`. */
declare module "flotilla:function/s3@0.1.1" {
  /** Why an S3 call failed. */
  export type Error =
    /** The bucket is not in the function's `s3_buckets`, or access was refused. */
    | { tag: "denied"; val: string }
    /** S3 could not be reached or failed. */
    | { tag: "unavailable"; val: string }
    /** The bucket name, key or body was invalid. */
    | { tag: "invalid-argument"; val: string };
  /**
   * Reads an object; `none` when it does not exist.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function getObject(bucket: string, key: string): Uint8Array | null;
  /**
   * Writes an object, replacing any existing one.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function putObject(bucket: string, key: string, body: Uint8Array, contentType: string | null): void;
  /**
   * Deletes an object; deleting an absent object is not an error.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function deleteObject(bucket: string, key: string): void;
  const s3: {
    getObject: typeof getObject;
    putObject: typeof putObject;
    deleteObject: typeof deleteObject;
  };
  export default s3;
}

/**
 * Amazon DynamoDB, limited to the function's `dynamodb_tables`.
 *
 * Keys and items cross the boundary as DynamoDB-JSON text, for example
 * `{"pk": {"S": "user#1"}}`.
 */
declare module "flotilla:function/dynamodb@0.1.1" {
  /** Why a DynamoDB call failed. */
  export type Error =
    /** The table is not in the function's `dynamodb_tables`, or access was refused. */
    | { tag: "denied"; val: string }
    /** DynamoDB could not be reached or failed. */
    | { tag: "unavailable"; val: string }
    /** The key or item was not valid DynamoDB-JSON, or was rejected. */
    | { tag: "invalid-argument"; val: string };
  /**
   * Reads an item by its key; `none` when it does not exist.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function getItem(table: string, key: string): string | null;
  /**
   * Writes an item, replacing any existing item with the same key.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function putItem(table: string, item: string): void;
  /**
   * Deletes an item by its key; deleting an absent item is not an error.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function deleteItem(table: string, key: string): void;
  /**
   * Writes an item only when `condition` (a DynamoDB condition expression) holds;
   * `values` are its expression attribute values as DynamoDB-JSON text (`{}` for none).
   * `ok(false)` when the condition failed.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function putItemIf(table: string, item: string, condition: string, values: string): boolean;
  const dynamodb: {
    getItem: typeof getItem;
    putItem: typeof putItem;
    deleteItem: typeof deleteItem;
    putItemIf: typeof putItemIf;
  };
  export default dynamodb;
}

/** Structured logs attached to the invocation's result. */
declare module "flotilla:function/log@0.1.1" {
  /** Severity of a log record. */
  export type Level =
    /** Detailed diagnostics. */
    | "debug"
    /** Normal operation. */
    | "info"
    /** Something unexpected that the function handled. */
    | "warn"
    /** A failure. */
    | "error";
  /** Records one message; records past the per-invocation cap are dropped. */
  export function log(level: Level, message: string): void;
  const log: {
    log: typeof log;
  };
  export default log;
}

/** What the caller asked for beyond the request record, and how this invocation runs. */
declare module "flotilla:function/invocation@0.1.1" {
  /** How the invocation was started. */
  export type StartKind =
    /** A caller waits for the response (HTTP invoke or the Python client). */
    | "sync"
    /** An asynchronous job submitted by a caller. */
    | "job"
    /** A job started by another function through `spawn`. */
    | "spawned"
    /** A job started by a schedule. */
    | "scheduled";
  /** The HTTP method of the call ("POST" when the caller named none). */
  export function method(): string;
  /** The sub-path below the function's invoke URL, "/" when none. */
  export function path(): string;
  /** Decoded query parameters in order; repeats kept. */
  export function query(): Array<[string, string]>;
  /** The id of the API key that made the call; none for public or dev-mode calls. */
  export function caller(): string | null;
  /** How this invocation was started. */
  export function kind(): StartKind;
  /** 1 on the first run, 2 and up on retries of a job. */
  export function attempt(): number;
  /** Milliseconds left before this invocation's timeout. */
  export function remainingMs(): number;
  const invocation: {
    method: typeof method;
    path: typeof path;
    query: typeof query;
    caller: typeof caller;
    kind: typeof kind;
    attempt: typeof attempt;
    remainingMs: typeof remainingMs;
  };
  export default invocation;
}

/** The function's own secrets. */
declare module "flotilla:function/secrets@0.1.1" {
  /** Why reading a secret failed. */
  export type Error =
    /** The secret store could not be reached. */
    | { tag: "unavailable"; val: string };
  /**
   * A secret's value; none when the function has no secret of that name.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function get(name: string): string | null;
  const secrets: {
    get: typeof get;
  };
  export default secrets;
}

/** Publishing to topics that subscribers read live. */
declare module "flotilla:function/topics@0.1.1" {
  /** Why a publish failed. */
  export type Error =
    /** The topic does not match the function's `publish_topics`. */
    | { tag: "denied"; val: string }
    /** The broker could not be reached. */
    | { tag: "unavailable"; val: string }
    /** Bad topic name or message over 1 MiB. */
    | { tag: "invalid-argument"; val: string };
  /**
   * Publishes one message to `topic`.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function publish(topic: string, message: Uint8Array): void;
  const topics: {
    publish: typeof publish;
  };
  export default topics;
}

/** Asynchronous jobs started from inside a function. */
declare module "flotilla:function/spawn@0.1.1" {
  export type Headers = import("flotilla:function/types@0.1.1").Headers;
  /** Why a spawn failed. */
  export type Error =
    /** The function is not in this function's `spawn_functions`. */
    | { tag: "denied"; val: string }
    /** The queue or the job store could not be reached. */
    | { tag: "unavailable"; val: string }
    /** Bad function name, body over the target's limit, or too many spawns. */
    | { tag: "invalid-argument"; val: string };
  /**
   * Submits a job of `function` and returns its job id at once.
   * @throws {FlotillaHostError<Error>} when the host call fails.
   */
  export function job(function_: string, headers: Headers, body: Uint8Array): string;
  const spawn: {
    job: typeof job;
  };
  export default spawn;
}
