//! Declares 256 MiB of zeroed statics, so its initial linear memory alone is over
//! a typical cap: instantiation itself must be refused.
use std::ptr::addr_of_mut;

static mut BIG: [u8; 256 << 20] = [0; 256 << 20];

fn main() {
    // SAFETY: single-threaded guest; the only access to BIG.
    let big = unsafe { &mut *addr_of_mut!(BIG) };
    big[big.len() - 1] = 1;
    println!("touched {} bytes", std::hint::black_box(big).len());
}
