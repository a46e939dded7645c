;; The smallest Kiln guest: a WASI preview1 command module in text form.
;; `kiln run components/examples/hello.wat` adapts it to a component, compiles
;; it once (cached) and runs it in the sandbox.
(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "Hello from a Kiln sandbox!\n")
  (func (export "_start")
    ;; one iovec at address 0: {buf = 16, len = 27}; bytes written go to 8
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 27))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
