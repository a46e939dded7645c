//! Answers each line of stdin as soon as it arrives (an interactive
//! execution's input), then says how many it read.
use std::io::{BufRead, Write};

fn main() {
    let mut count = 0;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        count += 1;
        let _ = writeln!(stdout, "echo: {line}");
        let _ = stdout.flush();
    }
    println!("read {count} lines");
}
