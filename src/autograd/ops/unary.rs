//! The shared machinery of elementwise unary ops: apply `f`, and on the way back multiply the
//! incoming gradient by `f'(x)`, expressed through the input `x` and the output `y` (or, for
//! ops whose gradient PyTorch selects rather than multiplies, any function of the three).

use std::fmt;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::tensor::Tensor;
use crate::util::simd::par_chunks_dispatch;

/// Backward of an elementwise op: `grad_input = gradient(grad_output, x, y)` elementwise.
struct UnaryBackward<D> {
    name: &'static str,
    input: Tensor,
    output: Tensor,
    gradient: D,
}

impl<D> fmt::Debug for UnaryBackward<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.name, self.input.shape())
    }
}

impl<D: Fn(f32, f32, f32) -> f32 + Sync + Send> Backward for UnaryBackward<D> {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        let (x, y) = (self.input.as_slice(), self.output.as_slice());
        let mut grad = grad_output;
        par_chunks_dispatch(grad.as_slice_mut(), |start, g| {
            let (x, y) = (&x[start..start + g.len()], &y[start..start + g.len()]);
            for ((g, &x), &y) in g.iter_mut().zip(x).zip(y) {
                *g = (self.gradient)(*g, x, y);
            }
        });
        vec![Some(grad)]
    }
}

/// Records `y = f(x)` elementwise, with `dy/dx = derivative(x, y)`.
pub(crate) fn unary<'t>(
    input: Var<'t>,
    name: &'static str,
    f: impl Fn(f32) -> f32 + Sync + Send,
    derivative: impl Fn(f32, f32) -> f32 + Sync + Send + 'static,
) -> Var<'t> {
    unary_with(input, name, f, move |g, x, y| g * derivative(x, y))
}

/// Records `y = f(x)` elementwise, with the input's gradient `gradient(g, x, y)` from the
/// output's `g`: for ops whose gradient is 0 over a region whatever `g` is (PyTorch selects
/// there, so an infinite or NaN `g` gives 0, where multiplying by 0 would give NaN).
pub(crate) fn unary_with<'t>(
    input: Var<'t>,
    name: &'static str,
    f: impl Fn(f32) -> f32 + Sync + Send,
    gradient: impl Fn(f32, f32, f32) -> f32 + Sync + Send + 'static,
) -> Var<'t> {
    let x = input.value();
    let y = x.map(f);
    input.tape().record(
        y.clone(),
        &[input],
        UnaryBackward {
            name,
            input: x,
            output: y,
            gradient,
        },
    )
}
