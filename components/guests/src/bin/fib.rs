//! CPU-bound work with no I/O in the loop: fib(n) by naive recursion, n from the
//! first argument (default 25). Used by the metering benchmarks.
fn fib(n: u32) -> u64 {
    if n < 2 {
        n as u64
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(25);
    println!("{}", fib(std::hint::black_box(n)));
}
