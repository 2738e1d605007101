// Exercises the QuickJS prelude (sdk/js/prelude.js): TextDecoder, TextEncoder, console.
// op "roundtrip": body decoded as UTF-8 (U+FFFD for bad bytes) and encoded again.
// op "encode": the `text` header's value encoded as UTF-8.
// op "fatal": decoding the body with { fatal: true }: "ok" or the error's name.
// op "console": console.log/info/debug/warn/error of a few values.
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function handle(request) {
  const header = (name) => (request.headers.find(([k]) => k === name) || ["", ""])[1];
  const op = header("op");
  let body = new Uint8Array(0);
  if (op === "roundtrip") {
    body = encoder.encode(decoder.decode(request.body));
  } else if (op === "encode") {
    body = encoder.encode(header("text"));
  } else if (op === "fatal") {
    try {
      new TextDecoder("utf-8", { fatal: true }).decode(request.body);
      body = encoder.encode("ok");
    } catch (e) {
      body = encoder.encode(e.name);
    }
  } else if (op === "console") {
    console.log("log", 1, { a: [1, "b"] }, null);
    console.info("info \u2603");
    console.debug(undefined);
    console.warn("warn");
    console.error(new Error("boom").message);
  }
  return { status: 200, headers: [["encoding", decoder.encoding]], body };
}
