//! Writes 8 MiB to stdout and 8 MiB to stderr, then exits normally: the host
//! must cap what it keeps without stopping the guest.
use std::io::Write;

fn main() {
    let line = [b'x'; 1023];
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    for _ in 0..8192 {
        let _ = out.write_all(&line);
        let _ = out.write_all(b"\n");
        let _ = err.write_all(&line);
        let _ = err.write_all(b"\n");
    }
    let _ = out.flush();
    let _ = err.flush();
    std::process::exit(0);
}
