//! Greets whoever stdin names, on stdout, and reports on stderr.
use std::io::Read;

fn main() {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let name = input.trim();
    let name = if name.is_empty() { "world" } else { name };
    println!("Hello, {name}!");
    eprintln!("greeted {} bytes of input", input.len());
}
