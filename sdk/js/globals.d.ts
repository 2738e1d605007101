// The globals Flotilla's JavaScript guests can count on beyond ES2022: on QuickJS the
// build's prelude (sdk/js/prelude.js) provides them; StarlingMonkey has them built in.
// Compile with `lib: ["es2022"]` (no DOM): these declarations stand in for the DOM's.

/** Writes to the invocation's captured stdout (log, info, debug) or stderr (warn, error). */
declare var console: {
  log(...data: unknown[]): void;
  info(...data: unknown[]): void;
  debug(...data: unknown[]): void;
  warn(...data: unknown[]): void;
  error(...data: unknown[]): void;
};

/** UTF-8 text to bytes. */
declare class TextEncoder {
  readonly encoding: "utf-8";
  encode(input?: string): Uint8Array;
}

/** UTF-8 bytes to text (malformed input becomes U+FFFD, or throws when `fatal`). */
declare class TextDecoder {
  constructor(label?: "utf-8" | "utf8", options?: { fatal?: boolean });
  readonly encoding: "utf-8";
  readonly fatal: boolean;
  decode(input?: Uint8Array | ArrayLike<number>): string;
}

/** Base64 of a binary string (one character per byte). */
declare function btoa(data: string): string;

/** The binary string (one character per byte) a base64 text encodes. */
declare function atob(data: string): string;
