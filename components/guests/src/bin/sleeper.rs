//! Sleeps on the wall clock, burning no fuel: only the deadline can stop it.
fn main() {
    println!("going to sleep");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
