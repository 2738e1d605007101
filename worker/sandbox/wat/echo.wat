;; The trivial echo guest: returns status 200 with the request's headers and body.
;; Core module implementing the canonical ABI of `handle` (8 flat i32 params, result
;; written to a 24-byte return area at address 0); a bump allocator serves cabi_realloc.
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "cabi_realloc") (param $old i32) (param $oldsz i32) (param $align i32) (param $size i32) (result i32)
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
    (if (local.get $old) (then (memory.copy (local.get $ptr) (local.get $old) (local.get $oldsz))))
    (local.get $ptr))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store16 (i32.const 4) (i32.const 200))
    (i32.store (i32.const 8) (local.get 4))
    (i32.store (i32.const 12) (local.get 5))
    (i32.store (i32.const 16) (local.get 6))
    (i32.store (i32.const 20) (local.get 7))
    (i32.const 0))
  (func (export "cabi_post_handle") (param i32)
    (global.set $heap (i32.const 1024)))
)
