//! Tries to look past the sandbox: the environment, files, directories and the
//! network. Prints one line per attempt so the host's test can check each.
use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

fn main() {
    for (key, value) in std::env::vars() {
        println!("env {key}={value}");
    }
    println!("args {}", std::env::args().count());
    for path in ["/etc/passwd", "/proc/self/environ", ".", "/"] {
        match std::fs::read_dir(path) {
            Ok(entries) => println!("dir {path} OPEN {}", entries.count()),
            Err(e) => println!("dir {path} denied: {e}"),
        }
        match std::fs::File::open(path) {
            Ok(mut f) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                println!("file {path} OPEN {} bytes", s.len());
            }
            Err(e) => println!("file {path} denied: {e}"),
        }
    }
    match std::fs::write("kiln-snoop-was-here", b"x") {
        Ok(()) => println!("write OPEN"),
        Err(e) => println!("write denied: {e}"),
    }
    let port = std::env::args().nth(1).unwrap_or_else(|| "80".into());
    let target = format!("127.0.0.1:{port}");
    match target.parse() {
        Ok(addr) => match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Ok(_) => println!("tcp {target} OPEN"),
            Err(e) => println!("tcp {target} denied: {e}"),
        },
        Err(e) => println!("tcp {target} unparsable: {e}"),
    }
    match "localhost:80".to_socket_addrs() {
        Ok(addrs) => println!("dns OPEN {}", addrs.count()),
        Err(e) => println!("dns denied: {e}"),
    }
}
