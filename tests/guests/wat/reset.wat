;; Memory-reset probe: reports what it finds in memory, tables and globals, then dirties them.
;; A fresh instance must always report the initial state, whatever the pooling allocator's
;; reset strategy (memset of a kept-resident prefix, madvise, CoW image, batched decommits).
;; The response body (48 bytes at 0x200) holds these i32s, little-endian:
;;   0  word at 0x9000       (zero, low, inside the first pages)          expect 0
;;   4  word at 0x8000       (data segment, low)                          expect "SEED"
;;   8  word at 0x300000     (zero, 3 MiB: past a 2 MiB kept-resident prefix) expect 0
;;  12  word at 0x310000     (data segment at 3 MiB + 64 KiB)             expect "DEEP"
;;  16  memory.size          (pages)                                      expect 64
;;  20  memory.grow 1        (previous size)                              expect 64
;;  24  first word of the grown page                                      expect 0
;;  28  word 32 KiB into the grown page                                   expect 0
;;  32  OR of one word per page over 64 pages from 0x200000                expect 0
;;  36  ref.is_null(table[0]) (an element segment fills it)               expect 0
;;  40  ref.is_null(table[1])                                             expect 1
;;  44  global $g                                                         expect 7
(module
  (memory (export "memory") 64)
  (table $t 2 funcref)
  (elem (table $t) (i32.const 0) func $f)
  (global $g (mut i32) (i32.const 7))
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0x8000) "SEED")
  (data (i32.const 0x310000) "DEEP")
  (func $f)
  (func (export "cabi_realloc") (param $old i32) (param $oldsz i32) (param $align i32) (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr
      (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
               (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
    (if (i32.gt_u (global.get $heap) (i32.const 0x8000)) (then unreachable))
    (if (local.get $old)
      (then (memory.copy (local.get $ptr) (local.get $old)
              (select (local.get $oldsz) (local.get $size)
                      (i32.lt_u (local.get $oldsz) (local.get $size))))))
    (local.get $ptr))
  (func (export "handle") (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    (local $grown i32) (local $p i32) (local $acc i32)
    ;; read everything first
    (i32.store (i32.const 0x200) (i32.load (i32.const 0x9000)))
    (i32.store (i32.const 0x204) (i32.load (i32.const 0x8000)))
    (i32.store (i32.const 0x208) (i32.load (i32.const 0x300000)))
    (i32.store (i32.const 0x20c) (i32.load (i32.const 0x310000)))
    (i32.store (i32.const 0x210) (memory.size))
    (i32.store (i32.const 0x214) (memory.grow (i32.const 1)))
    (local.set $grown (i32.shl (i32.load (i32.const 0x214)) (i32.const 16)))
    (if (i32.lt_s (i32.load (i32.const 0x214)) (i32.const 0)) (then unreachable))
    (i32.store (i32.const 0x218) (i32.load (local.get $grown)))
    (i32.store (i32.const 0x21c) (i32.load (i32.add (local.get $grown) (i32.const 0x8000))))
    (local.set $p (i32.const 0x200000))
    (loop $read
      (local.set $acc (i32.or (local.get $acc) (i32.load (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 4096)))
      (br_if $read (i32.lt_u (local.get $p) (i32.const 0x240000))))
    (i32.store (i32.const 0x220) (local.get $acc))
    (i32.store (i32.const 0x224) (ref.is_null (table.get $t (i32.const 0))))
    (i32.store (i32.const 0x228) (ref.is_null (table.get $t (i32.const 1))))
    (i32.store (i32.const 0x22c) (global.get $g))
    ;; then dirty all of it for the next instance to (not) see
    (i32.store (i32.const 0x9000) (i32.const 0x11111111))
    (i32.store (i32.const 0x8000) (i32.const 0x22222222))
    (i32.store (i32.const 0x300000) (i32.const 0x33333333))
    (i32.store (i32.const 0x310000) (i32.const 0x44444444))
    (i32.store (local.get $grown) (i32.const 0x55555555))
    (i32.store (i32.add (local.get $grown) (i32.const 0x8000)) (i32.const 0x66666666))
    (local.set $p (i32.const 0x200000))
    (loop $write
      (i32.store (local.get $p) (i32.const 0x77777777))
      (local.set $p (i32.add (local.get $p) (i32.const 4096)))
      (br_if $write (i32.lt_u (local.get $p) (i32.const 0x240000))))
    (table.set $t (i32.const 0) (ref.null func))
    (table.set $t (i32.const 1) (ref.func $f))
    (global.set $g (i32.const 99))
    ;; response: ok, status 200, no headers, the 48-byte report
    (i32.store8 (i32.const 0) (i32.const 0))
    (i32.store16 (i32.const 4) (i32.const 200))
    (i32.store (i32.const 8) (i32.const 0))
    (i32.store (i32.const 12) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 0x200))
    (i32.store (i32.const 20) (i32.const 48))
    (i32.const 0))
  (func (export "cabi_post_handle") (param i32)
    (global.set $heap (i32.const 4096)))
)
