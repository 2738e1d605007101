;; A guest whose response strings and body sit at odd addresses, as list<u8> and UTF-8
;; strings may (a Rust guest's empty Vec points at 1). The byte-string export lifts them as
;; latin1 strings, which must start at even addresses: the sandbox's shim copies them.
;; Mode by the first body byte:
;;   'o'  body = the request body, copied to an odd address; headers at odd addresses
;;        ("x-odd": "café", "": "")
;;   'z'  empty body and header list pointing at 1 (Rust's dangling pointers)
;;   'e'  err("odd boom") from an odd address
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 101) "x-odd")
  (data (i32.const 201) "caf\c3\a9")
  (data (i32.const 301) "odd boom")
  ;; two headers at 512: ("x-odd", "café") and ("", "") with pointers 1
  (data (i32.const 512) "\65\00\00\00\05\00\00\00\c9\00\00\00\05\00\00\00\01\00\00\00\00\00\00\00\01\00\00\00\00\00\00\00")
  (func $realloc (export "cabi_realloc") (param $old i32) (param $oldsz i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $have i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $end) (local.get $have))
      (then
        (if (i32.eq (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $have)) (i32.const 65535)) (i32.const 16)))
                    (i32.const -1))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old)
              (select (local.get $oldsz) (local.get $size)
                      (i32.lt_u (local.get $oldsz) (local.get $size))))))
    (local.get $ptr))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (local $mode i32) (local $dst i32)
    (if (local.get 7) (then (local.set $mode (i32.load8_u (local.get 6)))))
    (if (i32.eq (local.get $mode) (i32.const 0x65))  ;; 'e'
      (then
        (i32.store8 (i32.const 0) (i32.const 1))
        (i32.store (i32.const 4) (i32.const 301))
        (i32.store (i32.const 8) (i32.const 8))
        (return (i32.const 0))))
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store16 (i32.const 4) (i32.const 200))
    (if (i32.eq (local.get $mode) (i32.const 0x7a))  ;; 'z'
      (then
        (i32.store (i32.const 8) (i32.const 4))
        (i32.store (i32.const 12) (i32.const 0))
        (i32.store (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 0))
        (return (i32.const 0))))
    (local.set $dst
      (i32.add (call $realloc (i32.const 0) (i32.const 0) (i32.const 2)
                              (i32.add (local.get 7) (i32.const 1)))
               (i32.const 1)))
    (memory.copy (local.get $dst) (local.get 6) (local.get 7))
    (i32.store (i32.const 8) (i32.const 512))
    (i32.store (i32.const 12) (i32.const 2))
    (i32.store (i32.const 16) (local.get $dst))
    (i32.store (i32.const 20) (local.get 7))
    (i32.const 0))
  (func (export "cabi_post_handle") (param i32))
)
