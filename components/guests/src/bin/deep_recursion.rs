//! Recurses without bound, with a frame the compiler cannot turn into a loop.
fn descend(depth: u64, trail: &mut [u64; 8]) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let mut frame = [depth; 8];
    std::hint::black_box(&mut frame);
    trail[(depth % 8) as usize] = frame[0];
    descend(depth + 1, &mut frame) + frame[(depth % 8) as usize]
}

fn main() {
    let mut trail = [0u64; 8];
    println!("{}", descend(0, &mut trail));
}
