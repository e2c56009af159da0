//! `summary` counts multiply-accumulates per layer as torchinfo does: the totals for VGG-16 and
//! ResNet-18 at 1x3x224x224 equal torchinfo's (`scripts/torchinfo_reference.py`, torchinfo 1.8
//! with torch 2.15):
//!
//! | model | params | mult-adds |
//! |---|---|---|
//! | VGG-16 | 138,357,544 | 15,483,821,032 (15.48 G) |
//! | ResNet-18 | 11,689,512 | 1,814,083,944 (1.81 G) |

use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::models::{resnet18, vgg16};
use striate::nn::{Conv2dConfig, Dense, Flatten, Module, Relu, Sequential, summary};

#[test]
fn vgg16_and_resnet18_totals_match_torchinfo() {
    let mut rng = StdRng::seed_from_u64(0);
    let resnet = resnet18(1000, &mut rng);
    let table = summary(&resnet, &[1, 3, 224, 224]);
    assert_eq!(table.total_params, 11_689_512);
    assert_eq!(table.total_macs, 1_814_083_944);
    // conv1: 64·3·7·7 weights at 112x112 positions
    assert_eq!(table.rows[0].macs, 64 * 3 * 7 * 7 * 112 * 112);
    assert_eq!(table.rows[0].output_shape, vec![1, 64, 112, 112]);
    println!("{table}");

    let vgg = vgg16(1000, &mut rng);
    let table = summary(&vgg, &[1, 3, 224, 224]);
    assert_eq!(table.total_params, 138_357_544);
    assert_eq!(table.total_macs, 15_483_821_032);
    let text = table.to_string();
    assert!(text.contains("Total mult-adds (G): 15.48"), "{text}");
}

#[test]
fn rows_count_convolutions_per_position_and_dense_layers_per_sample() {
    let mut rng = StdRng::seed_from_u64(0);
    let model = Sequential::new()
        .push(
            Conv2dConfig::new(2, 4, 3)
                .stride(2)
                .padding(1)
                .groups(2)
                .init(&mut rng),
        )
        .push(Relu)
        .push(Flatten::new())
        .push(Dense::new(4 * 4 * 4, 5, &mut rng));
    let table = summary(&model, &[3, 2, 8, 8]);
    let macs: Vec<u64> = table.rows.iter().map(|r| r.macs).collect();
    // conv: (4·1·3·3 + 4) parameters at 3·4·4 positions; dense: (64·5 + 5) per sample
    assert_eq!(macs, [40 * 48, 0, 0, 325 * 3]);
    assert_eq!(table.total_macs, 40 * 48 + 325 * 3);
    assert_eq!(model.num_params(), 40 + 325);
}
