;; A misbehaving guest for the sandbox tests: the first request body byte picks a behaviour.
;;   c counter (body = per-instance call count, u32 LE)   l infinite loop
;;   m memory bomb (grow until refused, then trap)        r unbounded recursion
;;   b big response (length = u32 LE after the mode byte)  e err("boom")
;;   s status 99                                           u unreachable
;;   g cache.get("k") -> 200 value | 404 | 500+case error  h cache.get in an endless loop
;;   L log.log(info, "k") then echo                        anything else: echo
(module
  (import "flotilla:function/cache@0.1.1" "get" (func $cache_get (param i32 i32 i32)))
  (import "flotilla:function/log@0.1.1" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "boom")
  (data (i32.const 72) "k")
  (global $heap (mut i32) (i32.const 1024))
  (global $count (mut i32) (i32.const 0))
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
  (func $recurse (param i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func $ok (param $status i32) (param $hp i32) (param $hl i32) (param $bp i32) (param $bl i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store16 (i32.const 4) (local.get $status))
    (i32.store (i32.const 8) (local.get $hp))
    (i32.store (i32.const 12) (local.get $hl))
    (i32.store (i32.const 16) (local.get $bp))
    (i32.store (i32.const 20) (local.get $bl))
    (i32.const 0))
  (func (export "handle") (param $ip i32) (param $il i32) (param $fp i32) (param $fl i32)
                          (param $hp i32) (param $hl i32) (param $bp i32) (param $bl i32) (result i32)
    (local $mode i32) (local $len i32) (local $need i32)
    (if (i32.eqz (local.get $bl))
      (then (return (call $ok (i32.const 200) (local.get $hp) (local.get $hl) (local.get $bp) (local.get $bl)))))
    (local.set $mode (i32.load8_u (local.get $bp)))
    ;; c: counter
    (if (i32.eq (local.get $mode) (i32.const 99))
      (then
        (global.set $count (i32.add (global.get $count) (i32.const 1)))
        (i32.store (i32.const 96) (global.get $count))
        (return (call $ok (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 96) (i32.const 4)))))
    ;; l: infinite loop
    (if (i32.eq (local.get $mode) (i32.const 108))
      (then (loop $spin (br $spin))))
    ;; m: memory bomb
    (if (i32.eq (local.get $mode) (i32.const 109))
      (then
        (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
        unreachable))
    ;; r: recursion
    (if (i32.eq (local.get $mode) (i32.const 114))
      (then (drop (call $recurse (i32.const 0)))))
    ;; b: big response
    (if (i32.eq (local.get $mode) (i32.const 98))
      (then
        (local.set $len (i32.load (i32.add (local.get $bp) (i32.const 1))))
        (local.set $need (i32.sub (i32.shr_u (i32.add (local.get $len) (i32.const 65535)) (i32.const 16)) (memory.size)))
        (if (i32.gt_s (local.get $need) (i32.const 0))
          (then (if (i32.eq (memory.grow (local.get $need)) (i32.const -1)) (then unreachable))))
        (return (call $ok (i32.const 200) (i32.const 0) (i32.const 0) (i32.const 0) (local.get $len)))))
    ;; e: err("boom")
    (if (i32.eq (local.get $mode) (i32.const 101))
      (then
        (i32.store8 (i32.const 0) (i32.const 1))
        (i32.store (i32.const 4) (i32.const 64))
        (i32.store (i32.const 8) (i32.const 4))
        (return (i32.const 0))))
    ;; s: bad status
    (if (i32.eq (local.get $mode) (i32.const 115))
      (then (return (call $ok (i32.const 99) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))))
    ;; u: trap
    (if (i32.eq (local.get $mode) (i32.const 117))
      (then unreachable))
    ;; g: cache.get("k")
    (if (i32.eq (local.get $mode) (i32.const 103))
      (then
        (call $cache_get (i32.const 72) (i32.const 1) (i32.const 128))
        (if (i32.eqz (i32.load8_u (i32.const 128)))
          (then
            (if (i32.load8_u (i32.const 132))
              (then (return (call $ok (i32.const 200) (i32.const 0) (i32.const 0) (i32.load (i32.const 136)) (i32.load (i32.const 140))))))
            (return (call $ok (i32.const 404) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))))
        (return (call $ok (i32.add (i32.const 500) (i32.load8_u (i32.const 132))) (i32.const 0) (i32.const 0)
                          (i32.load (i32.const 136)) (i32.load (i32.const 140))))))
    ;; h: hammer a host call
    (if (i32.eq (local.get $mode) (i32.const 104))
      (then (loop $again (call $cache_get (i32.const 72) (i32.const 1) (i32.const 128)) (br $again))))
    ;; L: log then echo
    (if (i32.eq (local.get $mode) (i32.const 76))
      (then (call $log (i32.const 1) (i32.const 72) (i32.const 1))))
    (call $ok (i32.const 200) (local.get $hp) (local.get $hl) (local.get $bp) (local.get $bl)))
  (func (export "cabi_post_handle") (param i32)
    (global.set $heap (i32.const 1024)))
)
