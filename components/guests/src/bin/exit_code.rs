//! Exits with the status given as its first argument (default 7), through
//! wasi:cli/exit's exit-with-code (std's `process::exit` only reports 0 or 1).
fn main() {
    let code: u8 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(7);
    println!("exiting with {code}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wasip2::cli::exit::exit_with_code(code);
    unreachable!("exit-with-code returned");
}
