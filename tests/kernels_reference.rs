//! Every conv and pooling kernel against a naive direct implementation (in f64), over at least
//! 50 seeded random configurations each: strides, asymmetric padding, dilation, groups
//! (depthwise included), odd sizes, batch 1, 1x1 kernels and single-channel inputs.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use striate::kernels::conv::{
    BlockedPasses, Conv2dShape, Conv2dSpec, ConvActivation, ConvPath, Padding2d,
    conv2d_backward_data, conv2d_backward_filter, conv2d_forward, conv2d_forward_fused,
    conv2d_relu_max_pool2d_to_vec, conv2d_relu_max_pool2d_with_indices_to_vec,
};
use striate::kernels::pool::{
    AvgDivisor, Pool2dShape, Pool2dSpec, avg_pool2d_backward, avg_pool2d_forward,
    global_avg_pool_backward, global_avg_pool_forward, global_max_pool_backward,
    global_max_pool_forward, max_pool2d_backward, max_pool2d_forward,
};

const CONFIGS: usize = 96;

fn random_vec(len: usize, rng: &mut StdRng) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// max |got - want| / max |want|: the error relative to the result's scale.
fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1e-12f64, |m, w| m.max(w.abs()));
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).abs())
        .fold(0.0, f64::max)
        / scale
}

/// A random convolution. `kind` cycles through the kernel paths: general im2col, pointwise,
/// depthwise (with a channel multiplier), single input channel.
fn random_conv(kind: usize, rng: &mut StdRng) -> ([usize; 4], [usize; 4], Conv2dSpec) {
    loop {
        let batch = rng.random_range(1..=3);
        let (groups, in_channels, out_channels) = match kind % 4 {
            0 => {
                let groups = rng.random_range(1..=3);
                (
                    groups,
                    groups * rng.random_range(1..=3),
                    groups * rng.random_range(1..=3),
                )
            }
            1 => {
                let groups = rng.random_range(1..=2);
                (
                    groups,
                    groups * rng.random_range(1..=4),
                    groups * rng.random_range(1..=4),
                )
            }
            2 => {
                let channels = rng.random_range(1..=4);
                (channels, channels, channels * rng.random_range(1..=2))
            }
            _ => (1, 1, rng.random_range(1..=4)),
        };
        let pointwise = kind % 4 == 1;
        let kernel = if pointwise {
            [1, 1]
        } else {
            [rng.random_range(1..=4), rng.random_range(1..=4)]
        };
        // Stride 1 has dedicated kernels (the wide grid): give it most configurations.
        let stride = if pointwise || (kind % 4 != 1 && rng.random_bool(0.6)) {
            [1, 1]
        } else {
            [rng.random_range(1..=3), rng.random_range(1..=3)]
        };
        let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
        let padding = if pointwise {
            Padding2d::default()
        } else {
            Padding2d {
                top: rng.random_range(0..=2),
                bottom: rng.random_range(0..=2),
                left: rng.random_range(0..=2),
                right: rng.random_range(0..=2),
            }
        };
        let (height, width) = (rng.random_range(1..=11), rng.random_range(1..=11));
        let fits = |size: usize, before: usize, after: usize, k: usize, d: usize| {
            size + before + after > d * (k - 1)
        };
        if !fits(height, padding.top, padding.bottom, kernel[0], dilation[0])
            || !fits(width, padding.left, padding.right, kernel[1], dilation[1])
        {
            continue;
        }
        let spec = Conv2dSpec {
            stride,
            padding,
            dilation,
            groups,
        };
        return (
            [batch, in_channels, height, width],
            [out_channels, in_channels / groups, kernel[0], kernel[1]],
            spec,
        );
    }
}

/// Calls `f(n, o, c, oh, ow, ih, iw, kh, kw)` for every product term of the convolution whose
/// input position lies inside the image; the direct definition all three references share.
fn for_each_term(s: &Conv2dShape, mut f: impl FnMut([usize; 9])) {
    let cg = s.in_channels / s.spec.groups;
    for n in 0..s.batch {
        for o in 0..s.out_channels {
            for ci in 0..cg {
                for oh in 0..s.out_height {
                    for ow in 0..s.out_width {
                        for kh in 0..s.kernel_height {
                            for kw in 0..s.kernel_width {
                                let ih = (oh * s.spec.stride[0] + kh * s.spec.dilation[0]) as isize
                                    - s.spec.padding.top as isize;
                                let iw = (ow * s.spec.stride[1] + kw * s.spec.dilation[1]) as isize
                                    - s.spec.padding.left as isize;
                                if ih >= 0
                                    && iw >= 0
                                    && (ih as usize) < s.in_height
                                    && (iw as usize) < s.in_width
                                {
                                    f([n, o, ci, oh, ow, ih as usize, iw as usize, kh, kw]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn input_index(s: &Conv2dShape, n: usize, c: usize, ih: usize, iw: usize) -> usize {
    ((n * s.in_channels + c) * s.in_height + ih) * s.in_width + iw
}

fn output_index(s: &Conv2dShape, n: usize, o: usize, oh: usize, ow: usize) -> usize {
    ((n * s.out_channels + o) * s.out_height + oh) * s.out_width + ow
}

fn weight_index(s: &Conv2dShape, o: usize, ci: usize, kh: usize, kw: usize) -> usize {
    ((o * (s.in_channels / s.spec.groups) + ci) * s.kernel_height + kh) * s.kernel_width + kw
}

fn channel(s: &Conv2dShape, o: usize, ci: usize) -> usize {
    (o / (s.out_channels / s.spec.groups)) * (s.in_channels / s.spec.groups) + ci
}

/// Runs the three kernels on random data of shape `s` and returns their errors relative to the
/// naive reference: forward, backward-data, backward-filter, bias gradient.
fn compare_with_reference(s: &Conv2dShape, rng: &mut StdRng) -> [f64; 4] {
    let [x, w, b, gy] = random_operands(s, rng);
    kernels_and_reference(s, &x, &w, &b, &gy).map(|(got, want)| relative_error(&got, &want))
}

/// Random input, weight, bias and output gradient for shape `s`.
fn random_operands(s: &Conv2dShape, rng: &mut StdRng) -> [Vec<f32>; 4] {
    let weight_len =
        s.out_channels * (s.in_channels / s.spec.groups) * s.kernel_height * s.kernel_width;
    let out_len: usize = s.output_shape().iter().product();
    [
        random_vec(s.batch * s.in_channels * s.in_height * s.in_width, rng),
        random_vec(weight_len, rng),
        random_vec(s.out_channels, rng),
        random_vec(out_len, rng),
    ]
}

/// Each pass's result beside its naive f64 reference: forward (with the fused ReLU's output
/// appended), backward-data, backward-filter, bias gradient.
fn kernels_and_reference(
    s: &Conv2dShape,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    gy: &[f32],
) -> [(Vec<f32>, Vec<f64>); 4] {
    let out_len = gy.len();
    let plane = s.out_height * s.out_width;
    let mut y_ref: Vec<f64> = (0..out_len)
        .map(|i| b[(i / plane) % s.out_channels] as f64)
        .collect();
    let mut gx_ref = vec![0.0f64; x.len()];
    let mut gw_ref = vec![0.0f64; w.len()];
    let mut gb_ref = vec![0.0f64; b.len()];
    for (i, &g) in gy.iter().enumerate() {
        gb_ref[(i / plane) % s.out_channels] += g as f64;
    }
    for_each_term(s, |[n, o, ci, oh, ow, ih, iw, kh, kw]| {
        let (xi, yi, wi) = (
            input_index(s, n, channel(s, o, ci), ih, iw),
            output_index(s, n, o, oh, ow),
            weight_index(s, o, ci, kh, kw),
        );
        y_ref[yi] += x[xi] as f64 * w[wi] as f64;
        gx_ref[xi] += gy[yi] as f64 * w[wi] as f64;
        gw_ref[wi] += gy[yi] as f64 * x[xi] as f64;
    });

    let mut y = vec![f32::NAN; out_len];
    conv2d_forward(x, w, Some(b), s, &mut y);
    // The fused ReLU epilogue (applied as values are stored on some paths, after on others),
    // as PyTorch's: NaN stays NaN.
    let mut y_relu = vec![f32::NAN; out_len];
    conv2d_forward_fused(x, w, Some(b), ConvActivation::Relu, s, &mut y_relu);
    let relu_ref: Vec<f64> = y_ref
        .iter()
        .map(|&v| if v < 0.0 { 0.0 } else { v })
        .collect();
    let mut gx = vec![f32::NAN; x.len()];
    conv2d_backward_data(gy, w, s, &mut gx);
    let mut gw = vec![f32::NAN; w.len()];
    let mut gb = vec![f32::NAN; b.len()];
    conv2d_backward_filter(x, gy, s, &mut gw, Some(&mut gb));
    y.extend(y_relu);
    y_ref.extend(relu_ref);
    [(y, y_ref), (gx, gx_ref), (gw, gw_ref), (gb, gb_ref)]
}

const PASSES: [&str; 4] = ["forward", "backward-data", "backward-filter", "bias"];

/// Padding of `top`, `bottom`, `left` and `right` pixels.
fn padding(top: usize, bottom: usize, left: usize, right: usize) -> Padding2d {
    Padding2d {
        top,
        bottom,
        left,
        right,
    }
}

/// Checks every pass of the convolution of `input` by `weight` against the naive reference
/// and returns its shape (whose path the caller may inspect).
fn passes_match_reference(
    input: [usize; 4],
    weight: [usize; 4],
    spec: Conv2dSpec,
    rng: &mut StdRng,
) -> Conv2dShape {
    let s = Conv2dShape::new(&input, &weight, spec);
    for (name, e) in PASSES.iter().zip(compare_with_reference(&s, rng)) {
        assert!(
            e < 1e-4,
            "{input:?} {weight:?} {spec:?}: {name} error {e:.2e}"
        );
    }
    s
}

/// An ungrouped convolution: input, weight, padding, stride, dilation.
type Ungrouped = ([usize; 4], [usize; 4], Padding2d, [usize; 2], [usize; 2]);

/// [`passes_match_reference`] for each of `cases`.
fn ungrouped_match_reference(cases: &[Ungrouped], rng: &mut StdRng) {
    for &(input, weight, padding, stride, dilation) in cases {
        let spec = Conv2dSpec {
            padding,
            stride,
            dilation,
            groups: 1,
        };
        passes_match_reference(input, weight, spec, rng);
    }
}

#[test]
fn conv2d_kernels_match_naive_reference() {
    let mut rng = StdRng::seed_from_u64(2024);
    let mut worst = [0.0f64; 4];
    for config in 0..CONFIGS {
        let (input_shape, weight_shape, spec) = random_conv(config, &mut rng);
        let s = Conv2dShape::new(&input_shape, &weight_shape, spec);
        let errors = compare_with_reference(&s, &mut rng);
        for ((name, e), w) in PASSES.iter().zip(errors).zip(worst.iter_mut()) {
            assert!(
                e < 1e-4,
                "config {config} {name}: relative error {e:.2e} for {s:?}"
            );
            *w = w.max(e);
        }
    }
    println!(
        "worst relative errors over {CONFIGS} configs (fwd, bwd-data, bwd-filter, bias): {worst:?}"
    );
}

#[test]
fn conv2d_large_images_use_several_tiles() {
    // Enough output pixels and channels that each image is split into several tiles, on the
    // strided path and on the stride-1 wide grid.
    let mut rng = StdRng::seed_from_u64(7);
    for stride in [[1, 2], [1, 1]] {
        let spec = Conv2dSpec {
            padding: Padding2d::symmetric(1, 1),
            stride,
            ..Default::default()
        };
        let s = Conv2dShape::new(&[2, 64, 40, 70], &[8, 64, 3, 3], spec);
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(e < 1e-4, "stride {stride:?} {name}: relative error {e:.2e}");
        }
    }
}

#[test]
fn winograd_convolutions_match_the_reference() {
    // 3x3, stride 1, 16 channels or more, on CPUs with AVX2 or AVX-512: Winograd's F(2x2, 3x3)
    // (F(4x4, 3x3) from 28x28 outputs, and in `both_winograd_tiles_match_the_references`)
    // forward, backward-data and (batches of 2 and more) filter gradient. Odd and even output
    // sizes (a last tile half outside), rows around one and two vectors of tiles, padding 0 to
    // 2 on each side independently (backward-data pads by 2 − padding), a wide deep image that
    // goes through several blocks of tile rows, and a batch whose small images are transformed
    // several at a time.
    let mut rng = StdRng::seed_from_u64(23);
    for (input, out_channels, padding) in [
        ([2, 16, 14, 14], 24, padding(1, 1, 1, 1)),
        ([2, 17, 9, 31], 16, padding(0, 2, 2, 1)),
        ([2, 20, 5, 33], 19, padding(2, 0, 0, 2)),
        ([2, 16, 1, 2], 16, padding(1, 2, 1, 0)),
        ([2, 64, 7, 200], 16, padding(1, 1, 0, 0)),
        // Small images several at a time (four 14x14 side by side with AVX-512 on 2 threads).
        ([8, 16, 14, 14], 32, padding(1, 1, 1, 1)),
        // An output large enough for F(4x4, 3x3), its last tiles partly outside (30 x 33).
        ([2, 16, 30, 33], 16, padding(1, 1, 1, 1)),
        // Single images, their output channels split over the threads: three blocks of
        // channels (two to one thread, one to the other), a last block of three channels, and
        // F(4x4, 3x3).
        ([1, 16, 14, 14], 24, padding(1, 1, 1, 1)),
        ([1, 20, 5, 33], 19, padding(2, 0, 0, 2)),
        ([1, 16, 30, 33], 16, padding(1, 1, 1, 1)),
    ] {
        let spec = Conv2dSpec {
            padding,
            ..Default::default()
        };
        let s = Conv2dShape::new(&input, &[out_channels, input[1], 3, 3], spec);
        if let ConvPath::Wide { winograd, .. } = s.path {
            // Not on a CPU without AVX2: then this checks the other paths on these shapes.
            assert_eq!(winograd.forward, winograd.backward_data, "{s:?}");
            let batch_of_two = [2, input[1], input[2], input[3]];
            let pair = Conv2dShape::new(&batch_of_two, &[out_channels, input[1], 3, 3], spec);
            let ConvPath::Wide { winograd: pair, .. } = pair.path else {
                panic!("{s:?}: another path for two images than for one")
            };
            // (With F(4x4, 3x3) forced, the small single images have too few tiles.)
            if std::env::var_os("STRIATE_WINOGRAD_TILE").is_none() {
                assert_eq!(winograd.forward, pair.forward, "{s:?}: one image as two");
            }
        }
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(e < 1e-4, "{input:?} {padding:?}: {name} error {e:.2e}");
        }
    }
}

#[test]
fn register_tile_paths_match_the_reference() {
    // The shifted kernel's register tiles need 8 output channels a group (the random shapes
    // above have fewer): the filter gradient read in place against shifted copies of a few
    // input channels (stride 1), and the wide grid (more input channels, or strides); dilations,
    // asymmetric padding, groups, filters of 1 to 5 columns; pointwise convolutions with a full
    // block of 8 outputs and a partial one, and two groups.
    let mut rng = StdRng::seed_from_u64(31);
    for (input, weight, padding, stride, dilation, groups) in [
        (
            [3, 1, 11, 13],
            [8, 1, 3, 3],
            padding(1, 0, 2, 1),
            1,
            [2, 1],
            1,
        ),
        (
            [2, 2, 9, 7],
            [16, 1, 3, 2],
            padding(0, 2, 1, 0),
            1,
            [1, 2],
            2,
        ),
        (
            [2, 3, 8, 9],
            [9, 3, 5, 5],
            padding(2, 2, 2, 2),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 1, 28, 28],
            [32, 1, 3, 3],
            padding(1, 1, 1, 1),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 2, 6, 17],
            [8, 2, 4, 1],
            padding(0, 1, 0, 0),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 12, 6, 8],
            [8, 12, 3, 3],
            padding(1, 1, 1, 1),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 4, 9, 11],
            [8, 4, 3, 3],
            padding(1, 1, 1, 1),
            2,
            [1, 1],
            1,
        ),
        (
            [2, 5, 6, 9],
            [11, 5, 1, 1],
            padding(0, 0, 0, 0),
            1,
            [1, 1],
            1,
        ),
        (
            [3, 4, 5, 7],
            [16, 2, 1, 1],
            padding(0, 0, 0, 0),
            1,
            [1, 1],
            2,
        ),
        // The filter gradient's transposed panel (128 columns or more): pointwise with 70
        // output channels (whole and partial register tiles of vectors), 130 input rows (tiles
        // of six and a partial one) and planes of 930 positions (two chunks of the panel); a
        // stride-2 3x3 with 144 columns and fewer outputs than a vector; a 3x2 filter over 22
        // channels (132 columns) read from the narrow shifted copies; two groups of 144
        // columns each.
        (
            [2, 130, 30, 31],
            [70, 130, 1, 1],
            padding(0, 0, 0, 0),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 16, 9, 11],
            [10, 16, 3, 3],
            padding(1, 1, 1, 1),
            2,
            [1, 1],
            1,
        ),
        (
            [2, 22, 6, 7],
            [40, 22, 3, 2],
            padding(1, 1, 1, 1),
            1,
            [1, 1],
            1,
        ),
        (
            [2, 32, 7, 8],
            [20, 16, 3, 3],
            padding(1, 0, 1, 1),
            2,
            [1, 1],
            2,
        ),
    ] {
        let spec = Conv2dSpec {
            padding,
            stride: [stride, stride],
            dilation,
            groups,
        };
        passes_match_reference(input, weight, spec, &mut rng);
    }
}

#[test]
fn planes_read_in_place_match_the_reference() {
    // The filter-gradient GEMM (128 columns or more) reads the input planes where they lie,
    // skipping the taps that fall in the padding: ResNet's 7x7 stem at stride 2 with unequal
    // padding on odd sizes; unequal strides; dilation; padding so wide that whole rows and
    // columns of some taps read only zeros; a 1x1 at stride 2 (the projection shortcut).
    let mut rng = StdRng::seed_from_u64(47);
    let cases = [
        (
            [2, 3, 23, 21],
            [16, 3, 7, 7],
            padding(3, 2, 3, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 16, 9, 13],
            [12, 16, 3, 3],
            padding(1, 1, 0, 2),
            [1, 3],
            [1, 1],
        ),
        (
            [2, 16, 8, 10],
            [20, 16, 3, 3],
            padding(2, 2, 2, 1),
            [2, 1],
            [2, 2],
        ),
        (
            [2, 8, 3, 4],
            [9, 8, 4, 4],
            padding(3, 3, 3, 3),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 160, 9, 8],
            [24, 160, 1, 1],
            padding(0, 0, 0, 0),
            [2, 2],
            [1, 1],
        ),
        // And a pointwise forward deep enough to read its planes in two depth blocks.
        (
            [2, 260, 24, 23],
            [20, 260, 1, 1],
            padding(0, 0, 0, 0),
            [1, 1],
            [1, 1],
        ),
    ];
    ungrouped_match_reference(&cases, &mut rng);
}

#[test]
fn channel_blocked_passes_match_the_reference() {
    // The forward and backward-data on channel blocks (AVX-512): strides 2 and [3, 2],
    // asymmetric padding and dilation; channels that fill no block, one block and a part of
    // one (in and out, so the last tile's channels and the last block's lanes are partial);
    // rows of 14 pixels and more (tiles of 14 by 32 channels), their remainders, and shorter
    // rows (tiles of 7 by 64); batch 1 (its tiles split over threads) and 3, and groups of
    // images whose weights are too large to stay in L2 from one to the next. Backward-data
    // goes a column phase of an input row at a time: phases of 1, 2 and 4 taps, and with a
    // 2x2 kernel at stride 3 rows that no tap reaches (zero). The forward of a kernel smaller
    // than its stride keeps the shifted kernel unless forced (below).
    let mut rng = StdRng::seed_from_u64(37);
    // (Unless `STRIATE_CONV_BLOCKED` forces the choice: then it reruns with the other path.)
    let chosen = striate::kernels::instruction_set() == "avx512"
        && std::env::var_os("STRIATE_CONV_BLOCKED").is_none();
    for (input, weight, padding, stride, dilation) in [
        (
            [2, 64, 56, 56],
            [128, 64, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [1, 16, 20, 31],
            [40, 16, 3, 3],
            padding(1, 0, 2, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [3, 21, 15, 30],
            [17, 21, 3, 2],
            padding(0, 2, 1, 0),
            [3, 2],
            [2, 1],
        ),
        (
            [1, 48, 14, 14],
            [96, 48, 2, 2],
            padding(0, 0, 0, 0),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 33, 9, 13],
            [70, 33, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [1, 2],
        ),
        (
            [1, 32, 7, 7],
            [80, 32, 3, 3],
            padding(2, 1, 1, 2),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 16, 11, 13],
            [24, 16, 2, 2],
            padding(0, 1, 1, 0),
            [3, 2],
            [1, 1],
        ),
        // Weights too large to stay in L2 between images (4.7 MB, 2.2 MB): both passes take
        // the images a group at a time.
        (
            [4, 256, 9, 9],
            [512, 256, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [6, 200, 8, 11],
            [300, 200, 3, 3],
            padding(1, 0, 1, 2),
            [2, 2],
            [1, 1],
        ),
    ] {
        let spec = Conv2dSpec {
            stride,
            padding,
            dilation,
            ..Default::default()
        };
        let s = passes_match_reference(input, weight, spec, &mut rng);
        if chosen {
            let forward = weight[2] >= stride[0] && weight[3] >= stride[1];
            let want = BlockedPasses {
                forward,
                backward_data: true,
            };
            assert!(
                matches!(s.path, ConvPath::Wide { blocked, .. } if blocked == want),
                "{input:?} {weight:?} {spec:?}: {:?}",
                s.path
            );
        }
        if s.out_height >= 2 && s.out_width >= 2 {
            let [x, w, b, _] = random_operands(&s, &mut rng);
            let context = format!("{input:?} {weight:?}");
            assert_fused_pool_is_separate(&x, &w, &b, &s, Pool2dSpec::square(2), &context);
        }
    }
}

#[test]
fn channel_blocked_passes_match_the_reference_on_random_shapes() {
    // The random shapes above have too few channels for the channel blocks: these have 16 to 40
    // in and 16 to 72 out, one group, a column stride of 1 or 2 and a row stride of 1 to 3,
    // kernels of 1 to 5 (some smaller than the stride), padding 0 to 3, dilation 1 or 2, and
    // images from a single pixel up (every pass against the reference; on AVX-512 the forward
    // and backward-data take the blocks wherever they fit).
    let mut rng = StdRng::seed_from_u64(41);
    let mut tested = 0;
    while tested < 24 {
        let kernel = [rng.random_range(1..=5), rng.random_range(1..=5)];
        let dilation = [rng.random_range(1..=2), rng.random_range(1..=2)];
        let pad = |rng: &mut StdRng| rng.random_range(0..=3);
        let padding = padding(pad(&mut rng), pad(&mut rng), pad(&mut rng), pad(&mut rng));
        let size = [rng.random_range(1..=17), rng.random_range(1..=33)];
        let span = |axis: usize| dilation[axis] * (kernel[axis] - 1);
        if size[0] + padding.top + padding.bottom <= span(0)
            || size[1] + padding.left + padding.right <= span(1)
        {
            continue;
        }
        let (c_in, c_out) = (rng.random_range(16..=40), rng.random_range(16..=72));
        let spec = Conv2dSpec {
            stride: [rng.random_range(1..=3), rng.random_range(1..=2)],
            padding,
            dilation,
            ..Default::default()
        };
        let input = [rng.random_range(1..=2), c_in, size[0], size[1]];
        passes_match_reference(input, [c_out, c_in, kernel[0], kernel[1]], spec, &mut rng);
        tested += 1;
    }
}

#[test]
fn forward_straight_into_the_output_skips_the_grid_columns() {
    // With AVX-512, output rows of at least a vector (16) are computed on the wide grid and
    // stored straight into the output, a vector that crosses a row boundary storing its lanes
    // of the next row a gap short and the grid's extra columns nowhere: rows of exactly a
    // vector, one more, just under two vectors, rows whose
    // boundaries fall in many lanes, gaps of 0, 1 and 2 columns (stride 1 and 2, wide padding,
    // dilation) and a partial last tile.
    let mut rng = StdRng::seed_from_u64(53);
    let cases = [
        (
            [2, 8, 6, 16],
            [8, 8, 3, 3],
            padding(1, 1, 1, 1),
            [1, 1],
            [1, 1],
        ),
        (
            [2, 8, 5, 34],
            [16, 8, 3, 3],
            padding(1, 1, 1, 1),
            [1, 2],
            [1, 1],
        ),
        (
            [2, 9, 7, 31],
            [12, 9, 3, 3],
            padding(0, 2, 2, 2),
            [2, 1],
            [1, 1],
        ),
        (
            [2, 8, 4, 45],
            [8, 8, 3, 3],
            padding(1, 1, 3, 3),
            [1, 2],
            [1, 1],
        ),
        (
            [2, 8, 6, 23],
            [8, 8, 3, 3],
            padding(2, 2, 2, 2),
            [1, 1],
            [2, 2],
        ),
    ];
    ungrouped_match_reference(&cases, &mut rng);
}

#[test]
fn gather_backward_data_matches_the_reference_at_every_stride() {
    // Backward-data as a gather per phase plane (AVX-512, 8 input channels a group or more):
    // strides 1 to 3, unequal per axis, with dilation, asymmetric padding, a partial block of
    // input channels, groups, and filters whose taps leave a phase plane empty (1x1 at
    // stride 2 reads one phase of four).
    let mut rng = StdRng::seed_from_u64(47);
    let mut gathered = 0;
    for (input, weight, padding, stride, dilation, groups) in [
        (
            [2, 9, 11, 10],
            [8, 9, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [1, 1],
            1,
        ),
        (
            [2, 16, 13, 12],
            [20, 16, 3, 3],
            padding(1, 0, 2, 1),
            [2, 2],
            [1, 1],
            1,
        ),
        (
            [2, 8, 14, 15],
            [8, 8, 5, 5],
            padding(2, 2, 2, 2),
            [3, 3],
            [1, 1],
            1,
        ),
        (
            [2, 16, 9, 12],
            [16, 8, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [2, 1],
            2,
        ),
        (
            [2, 8, 10, 9],
            [8, 8, 3, 3],
            padding(1, 1, 0, 2),
            [2, 1],
            [1, 1],
            1,
        ),
        (
            [2, 8, 9, 10],
            [8, 8, 3, 2],
            padding(0, 1, 1, 1),
            [1, 3],
            [1, 2],
            1,
        ),
        (
            [2, 8, 12, 12],
            [8, 8, 1, 1],
            padding(0, 0, 0, 0),
            [2, 2],
            [1, 1],
            1,
        ),
        (
            [2, 10, 7, 7],
            [8, 10, 3, 3],
            padding(1, 1, 1, 1),
            [1, 1],
            [1, 1],
            1,
        ),
        (
            [2, 8, 7, 8],
            [8, 8, 3, 3],
            padding(3, 2, 4, 1),
            [2, 2],
            [1, 1],
            1,
        ),
    ] {
        let spec = Conv2dSpec {
            padding,
            stride,
            dilation,
            groups,
        };
        let s = passes_match_reference(input, weight, spec, &mut rng);
        if let ConvPath::Wide { shifted, .. } = s.path {
            gathered += usize::from(shifted.backward_data);
        }
    }
    eprintln!("{gathered} of 9 shapes took the gather path on this CPU");
}

#[test]
fn strided_1x1_convolutions_match_the_reference() {
    // A 1x1 convolution at a stride above 1 (ResNet's projection shortcuts) computes its
    // forward as a pointwise GEMM on the pixels it reads, gathered a vector pair at a time at
    // column stride 2: widths even and odd, around one and two vectors of pairs (31 to 33, 63
    // to 65), unequal strides, strides 3, groups, a partial vector of channels, one image and
    // three; every pass against the reference (the forward into a buffer of NaN).
    let mut rng = StdRng::seed_from_u64(53);
    for (input, out_channels, stride, groups) in [
        ([1, 16, 8, 8], 32, [2, 2], 1),
        ([3, 5, 7, 9], 12, [2, 2], 1),
        ([2, 8, 6, 31], 16, [2, 2], 1),
        ([1, 24, 5, 32], 8, [2, 2], 1),
        ([2, 12, 3, 33], 20, [3, 2], 1),
        ([1, 16, 9, 63], 16, [2, 2], 2),
        ([1, 16, 4, 65], 24, [1, 2], 1),
        ([2, 18, 10, 11], 18, [2, 3], 3),
        ([1, 32, 14, 14], 64, [2, 1], 1),
    ] {
        let spec = Conv2dSpec {
            stride,
            groups,
            ..Default::default()
        };
        let weight = [out_channels, input[1] / groups, 1, 1];
        passes_match_reference(input, weight, spec, &mut rng);
    }
}

#[test]
fn depthwise_rows_wide_enough_for_vector_blocks() {
    // The direct path computes tiles of four rows by one or two vectors of sixteen columns,
    // the last tile of a row or column overlapping the one before: widths around one and two
    // vectors, heights around a tile, dilations, asymmetric padding and padding wider than the
    // kernel spans (cropped in backward-data), channel multipliers 1 to 3.
    let mut rng = StdRng::seed_from_u64(16);
    for (width, dilation, padding, multiplier) in [
        (16, [1, 1], Padding2d::symmetric(1, 1), 1),
        (
            17,
            [1, 2],
            Padding2d {
                top: 0,
                bottom: 2,
                left: 2,
                right: 0,
            },
            2,
        ),
        (31, [2, 1], Padding2d::symmetric(0, 0), 1),
        (
            40,
            [1, 1],
            Padding2d {
                top: 3,
                bottom: 1,
                left: 4,
                right: 1,
            },
            2,
        ),
        (19, [1, 1], Padding2d::symmetric(1, 1), 1),
        (33, [1, 1], Padding2d::symmetric(1, 1), 1),
        (48, [1, 1], Padding2d::symmetric(2, 2), 1),
        (57, [2, 2], Padding2d::symmetric(1, 3), 3),
        // Multiplier 1 reads the planes in place in both correlations: dilated columns, and
        // padding wider than the kernel spans (backward-data's border then negative).
        (35, [1, 3], Padding2d::symmetric(1, 2), 1),
        (
            26,
            [1, 1],
            Padding2d {
                top: 3,
                bottom: 0,
                left: 1,
                right: 4,
            },
            1,
        ),
    ] {
        let spec = Conv2dSpec {
            padding,
            dilation,
            groups: 3,
            ..Default::default()
        };
        // Heights below, at and between multiples of the forward's four-row tiles.
        let height = [3, 4, 9, 5][width % 4];
        let s = Conv2dShape::new(&[2, 3, height, width], &[3 * multiplier, 1, 3, 3], spec);
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(
                e < 1e-4,
                "width {width} {dilation:?} {padding:?}: {name} error {e:.2e}"
            );
        }
    }
}

#[test]
fn strided_depthwise_rows_wide_enough_for_vector_blocks() {
    // At strides above 1 the direct path reads phase planes (every `sh`-th row and `sw`-th
    // column of the padded plane): the copy splits a row's columns a vector pair at a time at
    // `sw = 2` (input widths of several vectors, even and odd, any left padding), one at a time
    // otherwise; 3x3, 5x5 and even filters, dilation, unequal strides, multipliers 1 and 2.
    let mut rng = StdRng::seed_from_u64(18);
    for (width, kernel, stride, dilation, padding, multiplier) in [
        (56, 3, [2, 2], [1, 1], Padding2d::symmetric(1, 1), 1),
        (57, 3, [2, 2], [1, 1], Padding2d::symmetric(1, 1), 2),
        (70, 5, [2, 2], [1, 1], Padding2d::symmetric(2, 2), 1),
        (
            45,
            3,
            [2, 2],
            [1, 2],
            Padding2d {
                top: 0,
                bottom: 2,
                left: 2,
                right: 0,
            },
            1,
        ),
        (64, 2, [2, 2], [1, 1], Padding2d::symmetric(0, 0), 1),
        (66, 3, [3, 3], [1, 1], Padding2d::symmetric(1, 1), 1),
        (
            50,
            3,
            [1, 2],
            [2, 1],
            Padding2d {
                top: 1,
                bottom: 0,
                left: 0,
                right: 1,
            },
            2,
        ),
        (49, 5, [2, 1], [1, 1], Padding2d::symmetric(2, 2), 1),
    ] {
        let spec = Conv2dSpec {
            padding,
            stride,
            dilation,
            groups: 3,
        };
        let height = [7, 12, 9, 17][width % 4];
        let s = Conv2dShape::new(
            &[2, 3, height, width],
            &[3 * multiplier, 1, kernel, kernel],
            spec,
        );
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(
                e < 1e-4,
                "width {width} {kernel}x{kernel} stride {stride:?} {dilation:?} {padding:?}: \
                 {name} error {e:.2e}"
            );
        }
    }
}

#[test]
fn depthwise_3x3_at_stride_two_reads_the_planes_in_place() {
    // On AVX-512 the forward and the filter gradient read the input rows in place and split
    // each vector pair into its even and odd columns, and with one filter per channel (the
    // multiplier 1 cases) the backward-data interleaves the two as it stores: outputs narrower than a vector, between one and two vectors and
    // wider (input widths 5 to 97, even and odd), fewer output rows than a tile, paddings 0 to
    // 2 and unequal ones (the masks at both edges, rows skipped above and below).
    let mut rng = StdRng::seed_from_u64(19);
    let pad = |top, bottom, left, right| Padding2d {
        top,
        bottom,
        left,
        right,
    };
    for (height, width, padding, multiplier) in [
        (5, 5, pad(1, 1, 1, 1), 1),
        (3, 9, pad(0, 0, 0, 0), 1),
        (8, 31, pad(1, 1, 1, 1), 2),
        (9, 32, pad(2, 1, 0, 2), 1),
        (11, 33, pad(1, 0, 2, 1), 1),
        (4, 64, pad(1, 1, 1, 1), 1),
        (13, 65, pad(0, 2, 1, 0), 2),
        (2, 97, pad(2, 2, 2, 2), 1),
    ] {
        let spec = Conv2dSpec {
            padding,
            stride: [2, 2],
            dilation: [1, 1],
            groups: 3,
        };
        let s = Conv2dShape::new(&[2, 3, height, width], &[3 * multiplier, 1, 3, 3], spec);
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(
                e < 1e-4,
                "{height}x{width} {padding:?} multiplier {multiplier}: {name} error {e:.2e}"
            );
        }
    }
}

#[test]
fn depthwise_image_alone_splits_its_channels_over_threads() {
    // Batch 1 with enough work: the direct path splits the image's channels over the pool
    // (unevenly when the channels do not divide by the threads), multiplier 1 and 2.
    let mut rng = StdRng::seed_from_u64(17);
    for (channels, multiplier) in [(13, 1), (6, 2)] {
        let spec = Conv2dSpec {
            padding: Padding2d::symmetric(1, 1),
            groups: channels,
            ..Default::default()
        };
        let s = Conv2dShape::new(
            &[1, channels, 100, 100],
            &[channels * multiplier, 1, 3, 3],
            spec,
        );
        for (name, e) in PASSES.iter().zip(compare_with_reference(&s, &mut rng)) {
            assert!(
                e < 1e-4,
                "{channels} channels x{multiplier}: {name} error {e:.2e}"
            );
        }
    }
}

#[test]
fn conv2d_kernels_propagate_infinities_and_nans_as_the_reference() {
    // A few infinite and NaN inputs and output gradients: every output the reference makes
    // NaN or infinite must be so, with the same sign, and no other (PyTorch's sums are plain
    // IEEE sums, so this does not depend on their order). Guards against kernels that compute
    // past a row's end and multiply a zero by an infinity there, or clamp NaN away.
    let mut rng = StdRng::seed_from_u64(7);
    let same = |pad: usize| Padding2d::symmetric(pad, pad);
    let cases = [
        ([2, 4, 9, 40], [4, 1, 3, 3], same(1), 1, 4), // depthwise, two vectors per row
        ([2, 3, 6, 21], [6, 1, 3, 3], same(1), 1, 3), // depthwise, multiplier 2, partial vector
        ([1, 2, 5, 7], [2, 1, 5, 5], same(2), 1, 2),  // depthwise, narrow rows, 5x5
        ([2, 16, 10, 14], [16, 16, 3, 3], same(1), 1, 1), // Winograd, one image at a time
        ([8, 16, 14, 14], [16, 16, 3, 3], same(1), 1, 1), // Winograd, several at a time
        ([2, 8, 9, 9], [8, 8, 3, 3], same(1), 2, 1),  // general, stride 2
        ([2, 16, 9, 30], [20, 16, 3, 3], same(1), 2, 1), // channel blocks, tiles past the row
        ([1, 16, 8, 8], [40, 16, 3, 3], same(1), 2, 1), // channel blocks, 7-pixel tiles
        ([2, 1, 9, 10], [8, 1, 3, 3], same(1), 1, 1), // wide grid, register tiles (conv1)
        ([2, 3, 7, 10], [5, 3, 3, 3], same(1), 1, 1), // wide grid, im2col + GEMM
        ([2, 8, 6, 10], [5, 8, 1, 1], same(0), 1, 1), // pointwise
    ];
    for (input, weight, padding, stride, groups) in cases {
        let spec = Conv2dSpec {
            padding,
            stride: [stride, stride],
            groups,
            ..Default::default()
        };
        let s = Conv2dShape::new(&input, &weight, spec);
        let [x, w, b, gy] = random_operands(&s, &mut rng);
        // All three specials anywhere, and a lone infinity at the end of a row: where the
        // reference keeps an infinity (no NaN from ∞ − ∞ beside it) a stray 0·∞ in a kernel,
        // such as a wide grid's discarded columns reading a row's last value, shows as NaN.
        for specials in [
            &[f32::INFINITY, f32::NEG_INFINITY, f32::NAN][..],
            &[f32::INFINITY],
        ] {
            let with_specials = |data: &[f32], rng: &mut StdRng| {
                let mut data = data.to_vec();
                for &special in specials {
                    let at = if specials.len() == 1 {
                        let width = if data.len() == x.len() {
                            input[3]
                        } else {
                            s.out_width
                        };
                        (rng.random_range(0..data.len() / width) + 1) * width - 1
                    } else {
                        rng.random_range(0..data.len())
                    };
                    data[at] = special;
                }
                data
            };
            // Specials in the input reach the forward and the filter gradient; in the output
            // gradient, backward-data and the bias gradient. (Not both in the filter gradient:
            // an infinite gradient meets the zero padding there, a product the reference skips
            // and an im2col product computes as NaN; PyTorch's answer depends on its path too.)
            let (x_special, gy_special) =
                (with_specials(&x, &mut rng), with_specials(&gy, &mut rng));
            let from_input = kernels_and_reference(&s, &x_special, &w, &b, &gy);
            let from_gradient = kernels_and_reference(&s, &x, &w, &b, &gy_special);
            let [forward, _, filter, _] = from_input;
            let [_, data, _, bias] = from_gradient;
            for (name, (got, want)) in PASSES.iter().zip([forward, data, filter, bias]) {
                let mut non_finite = 0;
                for (i, (&g, &r)) in got.iter().zip(&want).enumerate() {
                    let agrees = if r.is_nan() {
                        g.is_nan()
                    } else if r.is_infinite() {
                        g as f64 == r
                    } else {
                        g.is_finite()
                    };
                    non_finite += usize::from(!r.is_finite());
                    assert!(
                        agrees,
                        "{input:?} {weight:?} {specials:?} {name}: element {i} is {g}, \
                         reference {r}"
                    );
                }
                // The case tests something: the specials reached this pass's outputs.
                assert!(
                    non_finite > 0 || *name == "bias",
                    "{input:?} {name}: all finite"
                );
            }
        }
    }
}

/// A pooling window of 1 to 4 a side, stride 1 to 3, padding up to half the window, dilation 1
/// to 2 if `dilated`, either rounding.
fn random_pool_spec(rng: &mut StdRng, dilated: bool) -> Pool2dSpec {
    let kernel = [rng.random_range(1..=4), rng.random_range(1..=4)];
    Pool2dSpec {
        kernel,
        stride: [rng.random_range(1..=3), rng.random_range(1..=3)],
        padding: [
            rng.random_range(0..=kernel[0] / 2),
            rng.random_range(0..=kernel[1] / 2),
        ],
        dilation: if dilated {
            [rng.random_range(1..=2), rng.random_range(1..=2)]
        } else {
            [1, 1]
        },
        ceil_mode: rng.random_bool(0.5),
    }
}

fn random_pool(rng: &mut StdRng, dilated: bool) -> ([usize; 4], Pool2dSpec) {
    loop {
        let spec = random_pool_spec(rng, dilated);
        let shape = [
            rng.random_range(1..=3),
            rng.random_range(1..=3),
            rng.random_range(1..=9),
            rng.random_range(1..=9),
        ];
        let fits = (0..2)
            .all(|a| shape[2 + a] + 2 * spec.padding[a] > spec.dilation[a] * (spec.kernel[a] - 1));
        if fits {
            return (shape, spec);
        }
    }
}

/// The input positions of window (oh, ow) that lie inside the image, and the window's size when
/// padding counts (PyTorch's divisor with `count_include_pad`).
fn window(s: &Pool2dShape, oh: usize, ow: usize) -> (Vec<(usize, usize)>, usize) {
    let mut inside = Vec::new();
    let mut padded = 0;
    for kh in 0..s.spec.kernel[0] {
        for kw in 0..s.spec.kernel[1] {
            let ih = (oh * s.spec.stride[0] + kh * s.spec.dilation[0]) as isize
                - s.spec.padding[0] as isize;
            let iw = (ow * s.spec.stride[1] + kw * s.spec.dilation[1]) as isize
                - s.spec.padding[1] as isize;
            if ih < (s.in_height + s.spec.padding[0]) as isize
                && iw < (s.in_width + s.spec.padding[1]) as isize
            {
                padded += 1;
            }
            if ih >= 0 && iw >= 0 && (ih as usize) < s.in_height && (iw as usize) < s.in_width {
                inside.push((ih as usize, iw as usize));
            }
        }
    }
    (inside, padded)
}

/// Max pooling of `x` as training runs it (values and argmax) and as inference does (values
/// alone).
fn max_pool_both_ways(x: &[f32], s: &Pool2dShape) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
    let out_len: usize = s.output_shape().iter().product();
    let (mut y, mut idx) = (vec![0.0; out_len], vec![0u32; out_len]);
    max_pool2d_forward(x, s, &mut y, Some(&mut idx));
    let mut values_only = vec![0.0; out_len];
    max_pool2d_forward(x, s, &mut values_only, None);
    (y, idx, values_only)
}

#[test]
fn max_pool2d_matches_naive_reference() {
    let mut rng = StdRng::seed_from_u64(99);
    for config in 0..CONFIGS {
        let (shape, spec) = if config % 8 == 0 {
            ([2, 3, 8, 6], Pool2dSpec::square(2))
        } else {
            random_pool(&mut rng, true)
        };
        let s = Pool2dShape::new("max_pool2d", &shape, spec);
        let x = random_vec(shape.iter().product(), &mut rng);
        let (y, idx, values_only) = max_pool_both_ways(&x, &s);
        assert_eq!(
            values_only, y,
            "config {config}: inference values differ from training values"
        );
        let gy = random_vec(y.len(), &mut rng);
        let mut gx = vec![f32::NAN; x.len()];
        max_pool2d_backward(&gy, &idx, &s, &mut gx);

        let plane = s.in_height * s.in_width;
        let mut y_ref = vec![0.0f64; y.len()];
        let mut gx_ref = vec![0.0f64; x.len()];
        for p in 0..s.batch * s.channels {
            for oh in 0..s.out_height {
                for ow in 0..s.out_width {
                    let o = (p * s.out_height + oh) * s.out_width + ow;
                    let (inside, _) = window(&s, oh, ow);
                    let (h, w) = *inside
                        .iter()
                        .max_by(|a, b| {
                            x[p * plane + a.0 * s.in_width + a.1]
                                .total_cmp(&x[p * plane + b.0 * s.in_width + b.1])
                        })
                        .expect("every window holds an input element");
                    y_ref[o] = x[p * plane + h * s.in_width + w] as f64;
                    gx_ref[p * plane + h * s.in_width + w] += gy[o] as f64;
                }
            }
        }
        assert!(
            relative_error(&y, &y_ref) < 1e-6,
            "config {config} forward {s:?}"
        );
        assert!(
            relative_error(&gx, &gx_ref) < 1e-4,
            "config {config} backward {s:?}"
        );
    }
}

/// The vectorised 2x2 window at every row width around the vector lengths (whole vectors, a
/// last vector overlapping the one before, rows shorter than a vector), over several planes
/// at once, with NaN and infinities in some planes: PyTorch's values (NaN wins), and the same
/// as the indexed path that training uses.
#[test]
fn max_pool_2x2_matches_naive_reference_at_every_width() {
    let mut rng = StdRng::seed_from_u64(101);
    for in_width in 2..=70 {
        let shape = [2, 3, 2 + in_width % 3, in_width];
        let s = Pool2dShape::new("max_pool2d", &shape, Pool2dSpec::square(2));
        let mut x = random_vec(shape.iter().product(), &mut rng);
        if in_width % 2 == 0 {
            // Few distinct values: windows with ties, whose argmax is the first maximum.
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round());
        }
        let plane = shape[2] * shape[3];
        // Plane 1 holds a NaN, plane 4 an infinity (a window of ∞ and finite values is ∞).
        x[plane + rng.random_range(0..plane)] = f32::NAN;
        x[4 * plane + rng.random_range(0..plane)] = f32::INFINITY;
        let (y, idx, values_only) = max_pool_both_ways(&x, &s);
        let (oh_n, ow_n) = (s.out_height, s.out_width);
        for p in 0..shape[0] * shape[1] {
            for oh in 0..oh_n {
                for ow in 0..ow_n {
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(i, j)| x[p * plane + (2 * oh + i) * in_width + 2 * ow + j]);
                    // PyTorch's rule: the first in row-major order, a NaN replacing.
                    let offsets = [0, 1, in_width, in_width + 1];
                    let mut at = 0;
                    for k in 1..4 {
                        if window[k] > window[at] || window[k].is_nan() {
                            at = k;
                        }
                    }
                    let want = window[at];
                    let o = (p * oh_n + oh) * ow_n + ow;
                    let want_index = (2 * oh * in_width + 2 * ow + offsets[at]) as u32;
                    assert_eq!(
                        idx[o], want_index,
                        "width {in_width}, plane {p}, ({oh}, {ow}): argmax of {window:?}"
                    );
                    for (path, got) in [("values only", values_only[o]), ("indexed", y[o])] {
                        // (`==`: the sign of a zero maximum may differ from PyTorch's.)
                        assert!(
                            got == want || (got.is_nan() && want.is_nan()),
                            "width {in_width}, plane {p}, ({oh}, {ow}), {path}: {got} != {want}"
                        );
                    }
                }
            }
        }
    }
}

/// Max pooling with other windows than 2x2 (ResNet's 3x3 stride 2 padded by 1 among them) at
/// every row width around the vector lengths, with strides, padding, dilation and `ceil_mode`:
/// values and indices exactly PyTorch's rule (the first maximum in row-major order, NaN
/// replacing), with ties, and with NaN and infinities in some planes.
#[test]
fn max_pool_general_windows_match_pytorch_rule_at_every_width() {
    let mut rng = StdRng::seed_from_u64(102);
    for in_width in 1..=70 {
        let (spec, in_height) = loop {
            let spec = random_pool_spec(&mut rng, true);
            let in_height = rng.random_range(1..=9);
            let fits = |a: usize, side: usize| {
                side + 2 * spec.padding[a] > spec.dilation[a] * (spec.kernel[a] - 1)
            };
            if fits(0, in_height) && fits(1, in_width) {
                break (spec, in_height);
            }
        };
        let shape = [2, 3, in_height, in_width];
        let s = Pool2dShape::new("max_pool2d", &shape, spec);
        let mut x = random_vec(shape.iter().product(), &mut rng);
        if in_width % 2 == 0 {
            // Few distinct values: windows with ties, whose argmax is the first maximum.
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round());
        }
        let plane = in_height * in_width;
        // Plane 1 holds a NaN, plane 3 a negative infinity, plane 4 a positive one.
        x[plane + rng.random_range(0..plane)] = f32::NAN;
        x[3 * plane + rng.random_range(0..plane)] = f32::NEG_INFINITY;
        x[4 * plane + rng.random_range(0..plane)] = f32::INFINITY;
        let (y, idx, values_only) = max_pool_both_ways(&x, &s);
        for p in 0..6 {
            for oh in 0..s.out_height {
                for ow in 0..s.out_width {
                    let (inside, _) = window(&s, oh, ow);
                    let at = |&(h, w): &(usize, usize)| h * in_width + w;
                    let mut want_index = at(&inside[0]);
                    for tap in &inside[1..] {
                        let (value, best) = (x[p * plane + at(tap)], x[p * plane + want_index]);
                        if value > best || value.is_nan() {
                            want_index = at(tap);
                        }
                    }
                    let want = x[p * plane + want_index];
                    let o = (p * s.out_height + oh) * s.out_width + ow;
                    let case = format!("{s:?}, plane {p}, ({oh}, {ow})");
                    assert_eq!(idx[o], want_index as u32, "{case}: argmax");
                    for (path, got) in [("values only", values_only[o]), ("indexed", y[o])] {
                        assert!(
                            got == want || (got.is_nan() && want.is_nan()),
                            "{case}, {path}: {got} != {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn avg_pool2d_matches_naive_reference() {
    let mut rng = StdRng::seed_from_u64(100);
    for config in 0..CONFIGS {
        let (shape, spec) = random_pool(&mut rng, false);
        let s = Pool2dShape::new("avg_pool2d", &shape, spec);
        let divisor = if config % 2 == 0 {
            AvgDivisor::IncludePadding
        } else {
            AvgDivisor::ExcludePadding
        };
        let x = random_vec(shape.iter().product(), &mut rng);
        let out_len: usize = s.output_shape().iter().product();
        let mut y = vec![0.0; out_len];
        avg_pool2d_forward(&x, &s, divisor, &mut y);
        let gy = random_vec(out_len, &mut rng);
        let mut gx = vec![f32::NAN; x.len()];
        avg_pool2d_backward(&gy, &s, divisor, &mut gx);

        let plane = s.in_height * s.in_width;
        let mut y_ref = vec![0.0f64; out_len];
        let mut gx_ref = vec![0.0f64; x.len()];
        for p in 0..s.batch * s.channels {
            for oh in 0..s.out_height {
                for ow in 0..s.out_width {
                    let o = (p * s.out_height + oh) * s.out_width + ow;
                    let (inside, padded) = window(&s, oh, ow);
                    let count = match divisor {
                        AvgDivisor::IncludePadding => padded,
                        AvgDivisor::ExcludePadding => inside.len(),
                    } as f64;
                    for &(h, w) in &inside {
                        y_ref[o] += x[p * plane + h * s.in_width + w] as f64 / count;
                        gx_ref[p * plane + h * s.in_width + w] += gy[o] as f64 / count;
                    }
                }
            }
        }
        assert!(
            relative_error(&y, &y_ref) < 1e-5,
            "config {config} forward {s:?} {divisor:?}"
        );
        assert!(
            relative_error(&gx, &gx_ref) < 1e-5,
            "config {config} backward {s:?} {divisor:?}"
        );
    }
}

#[test]
fn global_pooling_matches_naive_reference() {
    let mut rng = StdRng::seed_from_u64(101);
    for _ in 0..CONFIGS {
        let planes = rng.random_range(1..=6);
        let plane = rng.random_range(1..=30);
        let x = random_vec(planes * plane, &mut rng);
        let gy = random_vec(planes, &mut rng);
        let mut avg = vec![0.0; planes];
        global_avg_pool_forward(&x, plane, &mut avg);
        let mut gx_avg = vec![0.0; x.len()];
        global_avg_pool_backward(&gy, plane, &mut gx_avg);
        let (mut max, mut idx) = (vec![0.0; planes], vec![0; planes]);
        global_max_pool_forward(&x, plane, &mut max, &mut idx);
        let mut gx_max = vec![0.0; x.len()];
        global_max_pool_backward(&gy, &idx, plane, &mut gx_max);
        for p in 0..planes {
            let values = &x[p * plane..(p + 1) * plane];
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
            assert!((avg[p] as f64 - mean).abs() < 1e-6);
            let (arg, &best) = values
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            assert_eq!(max[p], best);
            for j in 0..plane {
                assert!((gx_avg[p * plane + j] as f64 - gy[p] as f64 / plane as f64).abs() < 1e-6);
                assert_eq!(gx_max[p * plane + j], if j == arg { gy[p] } else { 0.0 });
            }
        }
    }
}

/// The fused inference block (convolution, bias, ReLU and max pooling per image) equals the
/// two passes it replaces bit for bit, NaN included, on every conv path and for random windows.
#[test]
fn conv_relu_max_pool_fused_equals_the_separate_passes() {
    let mut rng = StdRng::seed_from_u64(31);
    for config in 0..CONFIGS {
        let (input_shape, weight_shape, spec) = random_conv(config, &mut rng);
        let s = Conv2dShape::new(&input_shape, &weight_shape, spec);
        let [_, o, oh, ow] = s.output_shape();
        let pool = loop {
            let (_, pool) = random_pool(&mut rng, config % 2 == 0);
            let fits = (0..2).all(|a| {
                [oh, ow][a] + 2 * pool.padding[a] > pool.dilation[a] * (pool.kernel[a] - 1)
            });
            if fits {
                break pool;
            }
        };
        let mut input = random_vec(input_shape.iter().product(), &mut rng);
        if config % 5 == 0 {
            let at = rng.random_range(0..input.len());
            input[at] = f32::NAN;
        }
        let weight = random_vec(weight_shape.iter().product(), &mut rng);
        let bias = random_vec(o, &mut rng);
        let context = format!("config {config}: {s:?} {pool:?}");
        assert_fused_pool_is_separate(&input, &weight, &bias, &s, pool, &context);
    }
}

/// Winograd's convolution pools each 2x2 tile of outputs in registers when a 2x2 max pooling
/// follows: bit for bit the separate passes, indices included, on odd and even output sizes,
/// images several at a time, a NaN in the input (the images go through the direct path) and
/// inputs so large that the transforms overflow (a window meets a NaN: the planes are redone).
#[test]
fn winograd_pooled_in_registers_equals_the_separate_passes() {
    let mut rng = StdRng::seed_from_u64(37);
    for (case, (input_shape, out_channels, padding)) in [
        ([8, 16, 14, 14], 24, padding(1, 1, 1, 1)),
        ([4, 32, 14, 14], 64, padding(1, 1, 1, 1)),
        ([2, 17, 9, 31], 16, padding(0, 2, 2, 1)),
        ([3, 20, 5, 33], 19, padding(2, 0, 0, 2)),
        ([2, 64, 7, 200], 16, padding(1, 1, 0, 0)),
        // Single images, their output channels split over the threads.
        ([1, 32, 14, 14], 64, padding(1, 1, 1, 1)),
        ([1, 20, 5, 33], 19, padding(2, 0, 0, 2)),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = Conv2dSpec {
            padding,
            ..Default::default()
        };
        let s = Conv2dShape::new(&input_shape, &[out_channels, input_shape[1], 3, 3], spec);
        let weight = random_vec(out_channels * input_shape[1] * 9, &mut rng);
        let bias = random_vec(out_channels, &mut rng);
        let input = random_vec(input_shape.iter().product(), &mut rng);
        for (variant, input) in [
            ("finite", input.clone()),
            ("a NaN", {
                let mut input = input.clone();
                let at = rng.random_range(0..input.len());
                input[at] = f32::NAN;
                input
            }),
            ("overflowing", input.iter().map(|v| v * 3e38).collect()),
        ] {
            let pool = Pool2dSpec::square(2);
            let context = format!("case {case}, {variant}: {s:?}");
            assert_fused_pool_is_separate(&input, &weight, &bias, &s, pool, &context);
        }
    }
}

/// Layers with few input channels pool in registers with AVX-512 (`pooled_rows.rs`; the
/// narrower instruction sets take the separate passes, checked here too): bit for bit the
/// separate passes, indices included, for one to four channels, 3x3 and other filters,
/// asymmetric padding, odd output sizes, rows narrower and wider than a vector tile, output
/// channels not a multiple of the register block; a NaN or an infinity in the input and
/// inputs large enough to overflow (those images take the separate passes).
#[test]
fn few_channel_layers_pooled_in_registers_equal_the_separate_passes() {
    let mut rng = StdRng::seed_from_u64(41);
    for (case, (input_shape, out_channels, [kh, kw], padding)) in [
        ([4, 1, 28, 28], 32, [3, 3], padding(1, 1, 1, 1)),
        ([3, 3, 32, 32], 16, [3, 3], padding(1, 1, 1, 1)),
        ([2, 2, 9, 70], 13, [3, 3], padding(0, 2, 2, 1)),
        ([2, 4, 11, 7], 7, [5, 3], padding(2, 1, 0, 2)),
        ([3, 1, 6, 40], 9, [2, 2], padding(0, 0, 0, 0)),
        ([1, 3, 64, 5], 18, [1, 3], padding(0, 0, 1, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let spec = Conv2dSpec {
            padding,
            ..Default::default()
        };
        let weight_shape = [out_channels, input_shape[1], kh, kw];
        let s = Conv2dShape::new(&input_shape, &weight_shape, spec);
        let weight = random_vec(weight_shape.iter().product(), &mut rng);
        let bias = random_vec(out_channels, &mut rng);
        let input = random_vec(input_shape.iter().product(), &mut rng);
        let mut with_value = |value: f32| {
            let mut input = input.clone();
            let at = rng.random_range(0..input.len());
            input[at] = value;
            input
        };
        let (nan, infinity) = (with_value(f32::NAN), with_value(f32::NEG_INFINITY));
        for (variant, input) in [
            ("finite", input.clone()),
            ("a NaN", nan),
            ("an infinity", infinity),
            ("overflowing", input.iter().map(|v| v * 3e38).collect()),
        ] {
            let pool = Pool2dSpec::square(2);
            let context = format!("case {case}, {variant}: {s:?}");
            assert_fused_pool_is_separate(&input, &weight, &bias, &s, pool, &context);
        }
    }
}

/// The fused convolution + ReLU + max pooling, with and without indices, against the
/// convolution followed by the pooling: the same bits (any NaN for a NaN) and indices.
fn assert_fused_pool_is_separate(
    input: &[f32],
    weight: &[f32],
    bias: &[f32],
    s: &Conv2dShape,
    pool: Pool2dSpec,
    context: &str,
) {
    let mut conv = vec![0.0; s.output_shape().iter().product()];
    conv2d_forward_fused(
        input,
        weight,
        Some(bias),
        ConvActivation::Relu,
        s,
        &mut conv,
    );
    let p = Pool2dShape::new("max_pool2d", &s.output_shape(), pool);
    let len = p.output_shape().iter().product();
    let (mut want, mut want_indices) = (vec![0.0; len], vec![0u32; len]);
    max_pool2d_forward(&conv, &p, &mut want, Some(&mut want_indices));
    let got = conv2d_relu_max_pool2d_to_vec(input, weight, Some(bias), s, pool);
    let (got_indexed, got_indices) =
        conv2d_relu_max_pool2d_with_indices_to_vec(input, weight, Some(bias), s, pool);
    assert_eq!(got.len(), want.len(), "{context}");
    for (i, ((g, gi), w)) in got.iter().zip(&got_indexed).zip(&want).enumerate() {
        for (fused, name) in [(g, "fused"), (gi, "fused with indices")] {
            assert!(
                fused.to_bits() == w.to_bits() || (fused.is_nan() && w.is_nan()),
                "{context} element {i}: {name} {fused}, separate {w}"
            );
        }
    }
    assert_eq!(got_indices, want_indices, "{context}");
}

/// Runs this test binary again with `variable=value` (read once per process, hence a child
/// process) and `args`, and panics with its output unless every test it runs passes.
fn rerun_with(variable: &str, value: &str, args: &[&str]) {
    let this_binary = std::env::current_exe().expect("the test binary's path");
    let output = std::process::Command::new(&this_binary)
        .env(variable, value)
        .env("RUST_TEST_THREADS", "1")
        .args(args)
        .output()
        .expect("run the test binary again");
    assert!(
        output.status.success(),
        "the kernel reference tests fail with {variable}={value}:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Winograd tests above with F(4x4, 3x3) forced (`STRIATE_WINOGRAD_TILE`): their shapes
/// otherwise take F(2x2, 3x3), all but the one whose output is 28 pixels or more a side.
#[test]
fn both_winograd_tiles_match_the_references() {
    if std::env::var_os("STRIATE_WINOGRAD_TILE").is_some() {
        // This is the child (or the user forced a tile): the other tests cover it.
        return;
    }
    rerun_with(
        "STRIATE_WINOGRAD_TILE",
        "4",
        &["winograd", "fused", "pooled"],
    );
}

/// The convolution tests above again with the channel-blocked forward and backward-data forced
/// wherever they fit (`STRIATE_CONV_BLOCKED=1`: also the forward of 1x1 kernels at stride 2)
/// and nowhere (`0`: the shifted kernel, and its gather backward, on the shapes they would
/// otherwise leave to channel blocks).
#[test]
fn forward_with_and_without_channel_blocks_matches_the_references() {
    if std::env::var_os("STRIATE_CONV_BLOCKED").is_some() {
        // This is the child (or the user forced the choice): the other tests cover it.
        return;
    }
    for value in ["0", "1"] {
        let tests = [
            "conv2d",
            "register_tile",
            "channel_blocked",
            "gather",
            "fused",
            "infinities",
        ];
        rerun_with("STRIATE_CONV_BLOCKED", value, &tests);
    }
}

/// Every test above, again with the kernels capped at each narrower instruction set this CPU
/// has (`STRIATE_ISA`): the AVX2 and portable paths — micro-kernels, direct and im2col
/// convolutions, pooling — are proven against the same references on a machine that would
/// otherwise only ever run its AVX-512 code.
#[test]
fn narrower_instruction_sets_match_the_references_too() {
    if std::env::var_os("STRIATE_ISA").is_some() {
        // This is the child (or the user forced a level): the other tests cover it.
        return;
    }
    for isa in ["avx2", "baseline"] {
        let skip = [
            "--skip",
            "narrower_instruction_sets_match_the_references_too",
        ];
        rerun_with("STRIATE_ISA", isa, &skip);
    }
}

#[test]
fn forward_into_channel_blocks_matches_the_planes() {
    // The forward that keeps activations in channel blocks (`conv2d_forward_blocks`) against
    // the forward on planes, bit for bit: the same tiles sum in the same order, whether they
    // read planes copied into blocks, blocks in place (a border at least the padding), or
    // blocks copied with more border (a border smaller than the padding); and on shapes that
    // do not run on blocks (Winograd, a 1x1 kernel at stride 2, 8 channels), converted at the
    // edges. A pointwise convolution (1x1, stride 1) runs a GEMM on planes and one-tap tiles
    // on blocks: both sum channel by channel from zero, then add the bias, so they agree bit
    // for bit while the channels fit one depth block of the GEMM (as here). The border and the lanes past the channels must come out zero, even where an
    // input holds an infinity or NaN (its products with the zero weights of those lanes
    // would be NaN).
    use striate::kernels::blocks::ChannelBlocks;
    use striate::kernels::conv::{ConvInput, conv2d_forward_blocks, forward_runs_on_blocks};
    let mut rng = StdRng::seed_from_u64(41);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut on_blocks = 0;
    for (input, weight, padding, stride, dilation) in [
        (
            [2, 64, 28, 28],
            [128, 64, 3, 3],
            padding(1, 1, 1, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [1, 16, 20, 31],
            [40, 16, 3, 3],
            padding(1, 0, 2, 1),
            [2, 2],
            [1, 1],
        ),
        (
            [3, 21, 15, 30],
            [17, 21, 3, 2],
            padding(0, 2, 1, 0),
            [3, 2],
            [2, 1],
        ),
        (
            [2, 33, 9, 13],
            [70, 33, 3, 3],
            padding(1, 1, 1, 1),
            [1, 1],
            [1, 2],
        ),
        (
            [1, 32, 7, 7],
            [80, 32, 3, 3],
            padding(2, 1, 1, 2),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 32, 12, 12],
            [48, 32, 5, 5],
            padding(2, 2, 2, 2),
            [1, 1],
            [1, 1],
        ),
        (
            [4, 32, 14, 14],
            [32, 32, 3, 3],
            padding(1, 1, 1, 1),
            [1, 1],
            [1, 1],
        ),
        (
            [2, 32, 14, 14],
            [64, 32, 1, 1],
            padding(0, 0, 0, 0),
            [2, 2],
            [1, 1],
        ),
        (
            [2, 32, 14, 14],
            [64, 32, 1, 1],
            padding(0, 0, 0, 0),
            [1, 1],
            [1, 1],
        ),
        (
            [3, 40, 9, 11],
            [24, 40, 1, 1],
            padding(0, 0, 0, 0),
            [1, 1],
            [1, 1],
        ),
        (
            [2, 8, 9, 9],
            [24, 8, 3, 3],
            padding(1, 1, 1, 1),
            [1, 1],
            [1, 1],
        ),
    ] {
        let spec = Conv2dSpec {
            stride,
            padding,
            dilation,
            ..Default::default()
        };
        let s = Conv2dShape::new(&input, &weight, spec);
        on_blocks += usize::from(forward_runs_on_blocks(&s));
        let mut x = random_vec(input.iter().product(), &mut rng);
        let w = random_vec(weight.iter().product(), &mut rng);
        let b = random_vec(weight[0], &mut rng);
        // An infinity and a NaN in the last image's first channel.
        let last = x.len() - input[1] * input[2] * input[3];
        x[last + 3] = f32::INFINITY;
        x[last + 5] = f32::NAN;
        for activation in [ConvActivation::Identity, ConvActivation::Relu] {
            let mut planes = vec![0.0; s.output_shape().iter().product()];
            conv2d_forward_fused(&x, &w, Some(&b), activation, &s, &mut planes);
            for halo in [0, 1, 3] {
                let expected = ChannelBlocks::from_planes(&planes, s.output_shape(), halo);
                let from_planes = conv2d_forward_blocks(
                    ConvInput::Planes(&x),
                    &w,
                    Some(&b),
                    activation,
                    &s,
                    halo,
                );
                assert_eq!(
                    bits(from_planes.as_slice()),
                    bits(expected.as_slice()),
                    "{input:?} {weight:?} {spec:?} {activation:?}: planes into blocks, border {halo}"
                );
                for input_halo in [0, 1, 2] {
                    let blocks = ChannelBlocks::from_planes(&x, input, input_halo);
                    let y = conv2d_forward_blocks(
                        ConvInput::Blocks(&blocks),
                        &w,
                        Some(&b),
                        activation,
                        &s,
                        halo,
                    );
                    assert_eq!(
                        bits(y.as_slice()),
                        bits(expected.as_slice()),
                        "{input:?} {weight:?} {spec:?} {activation:?}: blocks with border \
                         {input_halo} into border {halo}"
                    );
                }
            }
        }
    }
    if striate::kernels::instruction_set() == "avx512"
        && std::env::var_os("STRIATE_CONV_BLOCKED").is_none()
    {
        assert_eq!(on_blocks, 8, "the shapes meant for the channel blocks");
    }
}
