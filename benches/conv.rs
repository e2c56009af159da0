//! Convolution and pooling kernels, benchmarked directly (no tape). Throughput is in FLOP/s
//! (`2·N·Cout·Hout·Wout·Cin·KH·KW/groups` per pass), which criterion prints as elem/s.
//!
//! Shapes (issue 3): S1 mnist-conv1, S2 mnist-conv2, S3 vgg-conv3, S4 resnet-down,
//! S5 pointwise, S6 depthwise, and S7 depthwise at stride 2 (MobileNet's downsampling); and
//! 2x2 max pooling on `[64, 32, 28, 28]`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use rand::SeedableRng;
use rand::rngs::StdRng;
use striate::Tensor;
use striate::kernels::blocks::ChannelBlocks;
use striate::kernels::conv::{
    Conv2dShape, Conv2dSpec, ConvActivation, ConvInput, Padding2d, conv2d_backward_data,
    conv2d_backward_filter, conv2d_forward, conv2d_forward_blocks, forward_runs_on_blocks,
};
use striate::kernels::pool::{Pool2dShape, Pool2dSpec, max_pool2d_backward, max_pool2d_forward};

struct Case {
    name: &'static str,
    input: [usize; 4],
    out_channels: usize,
    kernel: usize,
    padding: usize,
    stride: usize,
    groups: usize,
}

const CASES: [Case; 7] = [
    Case {
        name: "S1_mnist_conv1",
        input: [64, 1, 28, 28],
        out_channels: 32,
        kernel: 3,
        padding: 1,
        stride: 1,
        groups: 1,
    },
    Case {
        name: "S2_mnist_conv2",
        input: [64, 32, 14, 14],
        out_channels: 64,
        kernel: 3,
        padding: 1,
        stride: 1,
        groups: 1,
    },
    Case {
        name: "S3_vgg_conv3",
        input: [4, 256, 56, 56],
        out_channels: 256,
        kernel: 3,
        padding: 1,
        stride: 1,
        groups: 1,
    },
    Case {
        name: "S4_resnet_down",
        input: [8, 64, 56, 56],
        out_channels: 128,
        kernel: 3,
        padding: 1,
        stride: 2,
        groups: 1,
    },
    Case {
        name: "S5_pointwise",
        input: [8, 256, 56, 56],
        out_channels: 64,
        kernel: 1,
        padding: 0,
        stride: 1,
        groups: 1,
    },
    Case {
        name: "S6_depthwise",
        input: [8, 128, 56, 56],
        out_channels: 128,
        kernel: 3,
        padding: 1,
        stride: 1,
        groups: 128,
    },
    Case {
        name: "S7_depthwise_s2",
        input: [8, 128, 56, 56],
        out_channels: 128,
        kernel: 3,
        padding: 1,
        stride: 2,
        groups: 128,
    },
];

fn bench_conv(c: &mut Criterion) {
    // As a training program would: keep freed buffers for the next iteration.
    striate::keep_freed_memory();
    let mut rng = StdRng::seed_from_u64(0);
    for case in &CASES {
        let spec = Conv2dSpec {
            stride: [case.stride, case.stride],
            padding: Padding2d::symmetric(case.padding, case.padding),
            dilation: [1, 1],
            groups: case.groups,
        };
        let weight_shape = [
            case.out_channels,
            case.input[1] / case.groups,
            case.kernel,
            case.kernel,
        ];
        let shape = Conv2dShape::new(&case.input, &weight_shape, spec);
        let x = Tensor::rand_uniform(&case.input, -1.0, 1.0, &mut rng);
        let w = Tensor::rand_uniform(&weight_shape, -0.1, 0.1, &mut rng);
        let b = Tensor::rand_uniform(&[case.out_channels], -0.1, 0.1, &mut rng);
        let gy = Tensor::rand_uniform(&shape.output_shape(), -1.0, 1.0, &mut rng);
        let mut y = vec![0.0f32; gy.len()];
        let mut gx = vec![0.0f32; x.len()];
        let mut gw = vec![0.0f32; w.len()];
        let mut gb = vec![0.0f32; b.len()];

        let mut group = c.benchmark_group(format!("conv2d/{}", case.name));
        group.throughput(Throughput::Elements(shape.flops()));
        group.sample_size(20);
        group.bench_function(BenchmarkId::from_parameter("forward"), |bench| {
            bench.iter(|| {
                conv2d_forward(
                    black_box(x.as_slice()),
                    w.as_slice(),
                    Some(b.as_slice()),
                    &shape,
                    &mut y,
                )
            })
        });
        // The forward in the layout a chain of convolutions keeps (as PyTorch's channels-last
        // input and output): channel blocks in and out, with a border of one pixel. Only where
        // the forward runs on them; elsewhere it would convert at its edges.
        if forward_runs_on_blocks(&shape) {
            let blocks = ChannelBlocks::from_planes(x.as_slice(), case.input, 1);
            group.bench_function(
                BenchmarkId::from_parameter("forward_channel_blocks"),
                |bench| {
                    bench.iter(|| {
                        conv2d_forward_blocks(
                            ConvInput::Blocks(black_box(&blocks)),
                            w.as_slice(),
                            Some(b.as_slice()),
                            ConvActivation::Identity,
                            &shape,
                            1,
                        )
                    })
                },
            );
        }
        group.bench_function(BenchmarkId::from_parameter("backward_data"), |bench| {
            bench.iter(|| {
                conv2d_backward_data(black_box(gy.as_slice()), w.as_slice(), &shape, &mut gx)
            })
        });
        group.bench_function(BenchmarkId::from_parameter("backward_filter"), |bench| {
            bench.iter(|| {
                conv2d_backward_filter(
                    black_box(x.as_slice()),
                    gy.as_slice(),
                    &shape,
                    &mut gw,
                    Some(&mut gb),
                )
            })
        });
        group.finish();
    }
}

fn bench_max_pool(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(1);
    let input = [64, 32, 28, 28];
    let shape = Pool2dShape::new("max_pool2d", &input, Pool2dSpec::square(2));
    let x = Tensor::rand_uniform(&input, -1.0, 1.0, &mut rng);
    let out_len: usize = shape.output_shape().iter().product();
    let gy = Tensor::rand_uniform(&shape.output_shape(), -1.0, 1.0, &mut rng);
    let mut y = vec![0.0f32; out_len];
    let mut idx = vec![0u32; out_len];
    let mut gx = vec![0.0f32; x.len()];
    max_pool2d_forward(x.as_slice(), &shape, &mut y, Some(&mut idx));

    let mut group = c.benchmark_group("max_pool2d/2x2_64x32x28x28");
    group.throughput(Throughput::Elements(x.len() as u64));
    group.bench_function("forward", |bench| {
        bench.iter(|| max_pool2d_forward(black_box(x.as_slice()), &shape, &mut y, Some(&mut idx)))
    });
    group.bench_function("forward_inference", |bench| {
        bench.iter(|| max_pool2d_forward(black_box(x.as_slice()), &shape, &mut y, None))
    });
    group.bench_function("backward", |bench| {
        bench.iter(|| max_pool2d_backward(black_box(gy.as_slice()), &idx, &shape, &mut gx))
    });
    group.finish();
}

criterion_group!(benches, bench_conv, bench_max_pool);

fn main() {
    // The bench's thread joins striate's pool, as a training program's main thread does
    // (`striate::set_num_threads`), so kernels are timed as programs run them.
    striate::set_num_threads(0).expect("the first pool of this process");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
