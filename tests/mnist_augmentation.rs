//! The pipeline of `examples/mnist.rs --augment`, run through a `DataLoader` as the example runs
//! it: the same images for a seed on any thread count and batch size, new ones for another seed
//! or epoch, and digits that stay in the frame. (The accuracy it buys is measured by running
//! the example; see the README.)

#[path = "../examples/common/augmentation.rs"]
mod augmentation;

use augmentation::mnist_augmentation;
use striate::data::{DataLoader, ImageDataset};

const SIDE: usize = 28;

/// `n` digit-like images: a ring of ink whose centre, radius and thickness vary with the index.
fn rings(n: usize) -> ImageDataset {
    let mut pixels = Vec::with_capacity(n * SIDE * SIDE);
    for i in 0..n {
        // Centred within 3 pixels and at most 8 pixels wide, so a shift, a zoom and an
        // elastic deformation together cannot push ink out of the frame.
        let (cy, cx) = (12.0 + (i % 4) as f32, 12.0 + (i / 4 % 4) as f32);
        let radius = 4.0 + (i % 3) as f32;
        let thickness = 1.5 + (i % 2) as f32 * 0.5;
        for y in 0..SIDE {
            for x in 0..SIDE {
                let r = ((y as f32 - cy).powi(2) + (x as f32 - cx).powi(2)).sqrt();
                let ink = (1.0 - (r - radius).abs() / thickness).clamp(0.0, 1.0);
                pixels.push((255.0 * ink).round() as u8);
            }
        }
    }
    ImageDataset::from_u8(pixels, [1, SIDE, SIDE], (0..n).map(|i| i % 10).collect()).unwrap()
}

/// Every image of epoch `epoch`, in the loader's order, built on `threads` threads.
fn epoch_images(seed: u64, epoch: u64, threads: usize, batch_size: usize) -> Vec<f32> {
    let loader = DataLoader::new(rings(30), batch_size)
        .shuffle(seed)
        .augment(mnist_augmentation());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        loader
            .epoch(epoch)
            .flat_map(|batch| batch.images.to_vec())
            .collect()
    })
}

#[test]
fn the_same_seed_gives_the_same_images_on_any_thread_count() {
    let reference = epoch_images(7, 2, 1, 8);
    assert_eq!(reference.len(), 30 * SIDE * SIDE);
    assert_eq!(epoch_images(7, 2, 2, 8), reference);
    assert_eq!(epoch_images(7, 2, 4, 5), reference);
    assert_ne!(epoch_images(8, 2, 2, 8), reference);
    assert_ne!(epoch_images(7, 3, 2, 8), reference);
}

#[test]
fn augmented_digits_move_but_stay_in_the_frame() {
    let data = rings(30);
    let originals = data.images();
    // Unshuffled, so image i of the batch is dataset image i.
    let loader = DataLoader::new(data, 30).augment(mnist_augmentation());
    let batch = loader.epoch(0).next().unwrap();
    assert_eq!(batch.images.shape(), &[30, 1, SIDE, SIDE]);
    let plane = SIDE * SIDE;
    let mut changed = 0;
    for (before, after) in originals
        .as_slice()
        .chunks(plane)
        .zip(batch.images.as_slice().chunks(plane))
    {
        // Bilinear resampling of pixels in [0, 1] stays in [0, 1].
        assert!(after.iter().all(|v| (0.0..=1.0).contains(v)), "{after:?}");
        changed += usize::from(before != after);
        // Zooms of ±8% change the ink by at most about 17%.
        let ink = |image: &[f32]| image.iter().sum::<f32>();
        let ratio = ink(after) / ink(before);
        assert!((0.7..1.3).contains(&ratio), "ink ratio {ratio}");
    }
    // Only a zero rotation, shift and zoom together would leave an image as it was.
    assert!(changed >= 29, "{changed} of 30 images changed");
}
