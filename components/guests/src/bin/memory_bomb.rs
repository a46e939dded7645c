//! Allocates and touches 1 MiB blocks until the memory cap refuses to grow.
fn main() {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[blocks.len() % (1 << 20)] = 1;
        blocks.push(std::hint::black_box(block));
    }
}
