// The WASI 0.2 interfaces a Flotilla JavaScript guest may import besides the flotilla ones
// (the builder's world adds them; see sdk/js/README.md). Hand-written, for the functions a
// function usually needs; resources are declared with the methods used most.

declare module "wasi:cli/environment@0.2.12" {
  /** The function's environment (its config's `env` plus FLOTILLA_* variables). */
  export function getEnvironment(): Array<[string, string]>;
  export function getArguments(): Array<string>;
  export function initialCwd(): string | null;
}

/** A WASI output stream (stdout, stderr). */
interface WasiOutputStream {
  /** Writes up to 4096 bytes and flushes; throws a stream error. */
  blockingWriteAndFlush(contents: Uint8Array): void;
  [Symbol.dispose](): void;
}

/** A WASI input stream (stdin: always empty in Flotilla). */
interface WasiInputStream {
  /** Reads up to `len` bytes; throws `{ tag: "closed" }` (as an Error's payload) at the end. */
  blockingRead(len: number): Uint8Array;
  [Symbol.dispose](): void;
}

declare module "wasi:cli/stdout@0.2.12" {
  export function getStdout(): WasiOutputStream;
}

declare module "wasi:cli/stderr@0.2.12" {
  export function getStderr(): WasiOutputStream;
}

declare module "wasi:cli/stdin@0.2.12" {
  export function getStdin(): WasiInputStream;
}

declare module "wasi:clocks/wall-clock@0.2.12" {
  export interface Datetime {
    seconds: number;
    nanoseconds: number;
  }
  /** Wall-clock time since the Unix epoch. */
  export function now(): Datetime;
  export function resolution(): Datetime;
}

declare module "wasi:clocks/monotonic-clock@0.2.12" {
  /** Nanoseconds from an arbitrary start (a number: precise up to 2^53 ns, 104 days). */
  export function now(): number;
  export function resolution(): number;
}

declare module "wasi:random/random@0.2.12" {
  /** `len` cryptographically secure random bytes. */
  export function getRandomBytes(len: number): Uint8Array;
  export function getRandomU64(): number;
}

declare module "wasi:filesystem/preopens@0.2.12" {
  /** The preopened directories: none in Flotilla (there is no filesystem). */
  export function getDirectories(): Array<[unknown, string]>;
}
