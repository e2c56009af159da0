//! Decoding and augmenting a folder of JPEGs as ImageNet training does: an `ImageFolder`
//! through a `DataLoader` with `RandomResizedCrop(224)`, a horizontal flip and ImageNet's
//! normalisation, batches of 64, prefetching. One iteration is one epoch over the folder;
//! criterion reports images per second.
//!
//! The folder is `$STRIATE_IMAGE_FOLDER` (`scripts/compare_image_folder.sh` makes one of
//! 3,000 JPEGs from Fashion-MNIST and times torchvision on it in the same sitting); without it
//! the bench writes 256 JPEGs of 256×256 pixels of its own into the temp dir.

use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use striate::data::{DataLoader, ImageFolder};
use striate::transforms::{Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop};

/// 256 smooth, colourful JPEGs in four classes.
fn own_folder() -> PathBuf {
    let root = std::env::temp_dir().join("striate-bench-image-folder");
    if root.join("3/255.jpg").is_file() {
        return root;
    }
    for i in 0..256u32 {
        let class = root.join((i % 4).to_string());
        std::fs::create_dir_all(&class).unwrap();
        let image = image::RgbImage::from_fn(256, 256, |x, y| {
            let wave = |k: u32| {
                ((((x * k + y * (k + 1) + i * 7) % 256) as f32 / 40.0).sin() * 120.0 + 128.0) as u8
            };
            image::Rgb([wave(1), wave(2), wave(3)])
        });
        image.save(class.join(format!("{i}.jpg"))).unwrap();
    }
    root
}

fn loader(root: &PathBuf) -> DataLoader {
    let folder = ImageFolder::open(root).unwrap();
    let augment = Compose::new(vec![
        Box::new(RandomResizedCrop::new(224)),
        Box::new(RandomHorizontalFlip::new(0.5)),
        Box::new(Normalize::imagenet()),
    ]);
    DataLoader::new(folder, 64)
        .shuffle(0)
        .augment(augment)
        .prefetch(true)
}

fn bench(c: &mut Criterion) {
    let root = std::env::var_os("STRIATE_IMAGE_FOLDER")
        .map(PathBuf::from)
        .unwrap_or_else(own_folder);
    let loader = loader(&root);
    let images = loader.dataset().len();
    println!(
        "{images} images in {} on {} threads",
        root.display(),
        striate::num_threads()
    );
    let mut group = c.benchmark_group("image_folder");
    group.throughput(Throughput::Elements(images as u64));
    group.sample_size(10);
    let mut epoch = 0;
    group.bench_function("decode_random_resized_crop_224_flip_normalize", |b| {
        b.iter(|| {
            let mut seen = 0;
            for batch in loader.try_epoch(epoch) {
                seen += batch.unwrap().len();
            }
            epoch += 1;
            assert_eq!(seen, images);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
