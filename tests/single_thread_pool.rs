//! `set_num_threads(1)` from the main thread keeps that thread outside the pool: were it the
//! pool's only thread, a data loader prefetching on its own thread (whose batch assembly runs
//! parallel iterators, sent to the pool: augmented batches always do) would wait for it while
//! it waits for that batch.
//!
//! A test without the usual harness, since only a program's main thread could join the pool.

use striate::data::{DataLoader, ImageDataset};
use striate::transforms::RandomHorizontalFlip;

fn main() {
    striate::set_num_threads(1).expect("the first pool of this process");
    assert_eq!(
        rayon::current_thread_index(),
        None,
        "with one thread, main stays outside the pool"
    );
    let images = 40;
    let data = ImageDataset::from_u8(
        (0..images * 28 * 28).map(|i| (i % 251) as u8).collect(),
        [1, 28, 28],
        (0..images).map(|i| i % 10).collect(),
    )
    .expect("a valid dataset");
    let loader = DataLoader::new(data, 8)
        .shuffle(3)
        .normalize(&[0.1307], &[0.3081])
        .augment(RandomHorizontalFlip::new(0.5))
        .prefetch(true);
    let labels: usize = loader.into_iter().map(|batch| batch.labels.len()).sum();
    assert_eq!(
        labels, images,
        "every image, once, through the prefetching thread"
    );
    println!("test single_thread_pool ... ok");
}
