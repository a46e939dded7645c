//! `Math.random`, seeded from WASI's random source on first use in an
//! instance. QuickJS seeds its own generator from the clock when the context
//! is made, and that context is part of the build's snapshot: every run would
//! draw the same sequence.

use std::cell::Cell;

use rquickjs::{Ctx, Function, Object};

thread_local! {
    /// xorshift64* state; 0 means not seeded yet (the snapshot holds 0).
    static STATE: Cell<u64> = const { Cell::new(0) };
}

unsafe extern "C" {
    /// wasi-libc's `getentropy`: at most 256 bytes from `wasi:random`.
    fn getentropy(buffer: *mut core::ffi::c_void, length: usize) -> core::ffi::c_int;
}

pub(crate) fn install(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    let random = Function::new(ctx.clone(), next)?.with_name("random")?;
    let math: Object = ctx.globals().get("Math")?;
    math.set("random", random)
}

/// A double in [0, 1) with 53 random bits, as V8 and QuickJS return.
fn next() -> f64 {
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = seed();
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is a live, writable buffer of the length passed.
    let failed = unsafe { getentropy(bytes.as_mut_ptr().cast(), bytes.len()) } != 0;
    let seed = u64::from_le_bytes(bytes);
    // The state must be non-zero; a host without randomness still gets a
    // working (if predictable) generator.
    if failed || seed == 0 {
        0x9E37_79B9_7F4A_7C15
    } else {
        seed
    }
}
