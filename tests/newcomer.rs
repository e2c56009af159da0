//! The newcomer's program, written from the docs alone with one dependency and one `use` line:
//! load MNIST, train the CNN one epoch, evaluate, save, reload, predict one image from its raw
//! pixels. Needs `STRIATE_DATA` (CI sets it); without it the test says it was skipped.

use striate::prelude::*;

#[test]
fn train_evaluate_save_reload_and_predict_one_image() -> striate::Result<()> {
    if std::env::var_os("STRIATE_DATA").is_none() {
        eprintln!("skipped: set STRIATE_DATA to a directory holding mnist/ to run this test");
        return Ok(());
    }
    let train = std::sync::Arc::new(Mnist::source().download(false).load(Split::Train)?);
    let test = std::sync::Arc::new(Mnist::source().download(false).load(Split::Test)?);
    let preprocessing = Preprocessing::mnist();
    let (mean, std) = (preprocessing.mean(), preprocessing.std());
    let train_loader = DataLoader::new(Subset::new(train, (0..2000).collect()), 8)
        .shuffle(0)
        .normalize(mean, std);
    let test_loader =
        DataLoader::new(Subset::new(test.clone(), (0..500).collect()), 250).normalize(mean, std);

    let mut rng = StdRng::seed_from_u64(0);
    let mut classifier = Classifier::new(mnist_cnn(10, &mut rng), preprocessing);
    let mut adam = Adam::new(AdamConfig::default());
    Fit::new(&mut classifier, &mut adam)
        .epochs(1)
        .progress(Progress::Silent)
        .run(&train_loader)?;
    let accuracy = evaluate(&classifier, &test_loader)?.accuracy;
    assert!(accuracy > 0.85, "accuracy {accuracy}");

    let path = std::env::temp_dir().join(format!(
        "striate-newcomer-{}.safetensors",
        std::process::id()
    ));
    save_classifier(&classifier, &path)?;
    let reloaded = load_classifier(mnist_cnn(10, &mut rng), &path)?;
    std::fs::remove_file(&path)?;

    // Raw 8-bit pixels, as a PNG decoder would give them: the classifier applies the training
    // normalisation itself, so its predictions score what `evaluate` measured.
    let mut correct = 0;
    for index in 0..500 {
        let pixels: Vec<u8> = test
            .image(index)
            .as_slice()
            .iter()
            .map(|&x| (x * 255.0).round() as u8)
            .collect();
        let prediction = reloaded.predict_image(&pixels)?;
        correct += usize::from(prediction.class == test.label(index));
    }
    let from_pixels = correct as f32 / 500.0;
    assert!(
        (from_pixels - accuracy).abs() < 1e-6,
        "predict_image {from_pixels} vs evaluate {accuracy}"
    );
    Ok(())
}
