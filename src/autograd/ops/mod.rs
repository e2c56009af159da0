//! One file per differentiable op: the method on [`Var`](crate::Var) that computes the value, the
//! `Backward` rule it records, and its tests (a hand-computed case and a gradient check).

mod unary;

mod abs;
mod adaptive_avg_pool2d;
mod adaptive_max_pool2d;
mod add;
pub mod batch_norm;
mod bce_with_logits;
mod clamp;
mod concat;
mod conv2d;
mod cross_entropy;
mod div;
mod dropout;
mod elu;
mod exp;
mod gelu;
mod hardswish;
mod l1;
mod leaky_relu;
mod linear;
mod ln;
mod log_softmax;
mod matmul;
mod max_min;
mod mean;
mod mish;
mod mse;
mod mul;
mod narrow;
mod neg;
mod nll;
mod permute;
mod pool2d;
mod powf;
mod relu;
mod reshape;
mod scalar;
mod sigmoid;
mod silu;
mod softmax;
mod softplus;
mod sqrt;
mod sub;
mod sum;
mod tanh;
