//! `max_pool2d`, `avg_pool2d`, `global_avg_pool2d`, `global_max_pool2d`: pooling on NCHW values.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::pool::{
    AvgDivisor, Pool2dShape, Pool2dSpec, avg_pool2d_backward, avg_pool2d_forward,
    global_avg_pool_backward, global_avg_pool_forward, global_max_pool_backward,
    global_max_pool_forward, max_pool2d_backward_to_vec, max_pool2d_forward,
};
use crate::tensor::Tensor;
use crate::tensor::check::expect_rank;

#[derive(Debug)]
struct MaxPoolBackward {
    indices: Vec<u32>,
    shape: Pool2dShape,
}

impl Backward for MaxPoolBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d max / dx = 1 at the recorded argmax of each window
        let s = &self.shape;
        let gx = max_pool2d_backward_to_vec(grad_output.as_slice(), &self.indices, s);
        let shape = [s.batch, s.channels, s.in_height, s.in_width];
        vec![Some(Tensor::from_vec(gx, &shape).expect("input shape"))]
    }
}

#[derive(Debug)]
struct AvgPoolBackward {
    shape: Pool2dShape,
    divisor: AvgDivisor,
}

impl Backward for AvgPoolBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d mean / dx = 1/divisor for every input element of the window
        let s = &self.shape;
        let mut gx = vec![0.0; s.batch * s.channels * s.in_height * s.in_width];
        avg_pool2d_backward(grad_output.as_slice(), s, self.divisor, &mut gx);
        let shape = [s.batch, s.channels, s.in_height, s.in_width];
        vec![Some(Tensor::from_vec(gx, &shape).expect("input shape"))]
    }
}

#[derive(Debug)]
struct GlobalPoolBackward {
    input_shape: Vec<usize>,
    /// The argmax of each plane for max pooling; `None` for average pooling.
    indices: Option<Vec<u32>>,
}

impl Backward for GlobalPoolBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // avg: dx = dy / (H·W) everywhere; max: dx = dy at the argmax
        let plane = self.input_shape[2] * self.input_shape[3];
        let mut gx = vec![0.0; grad_output.len() * plane];
        match &self.indices {
            Some(indices) => {
                global_max_pool_backward(grad_output.as_slice(), indices, plane, &mut gx)
            }
            None => global_avg_pool_backward(grad_output.as_slice(), plane, &mut gx),
        }
        vec![Some(
            Tensor::from_vec(gx, &self.input_shape).expect("input shape"),
        )]
    }
}

impl<'t> Var<'t> {
    /// Max pooling over `[N, C, H, W]` windows (`torch.nn.functional.max_pool2d`); padding acts
    /// as `-inf`. The argmax of each window is kept for the backward pass.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D or the window breaks the contract of [`Pool2dShape::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::nn::functional::Pool2dSpec;
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::arange(0.0, 16.0, 1.0).reshape(&[1, 1, 4, 4]));
    /// let y = x.max_pool2d(Pool2dSpec::square(2));
    /// assert_eq!(y.value().as_slice(), &[5.0, 7.0, 13.0, 15.0]);
    /// ```
    pub fn max_pool2d(self, spec: Pool2dSpec) -> Var<'t> {
        let input = self.value();
        let shape = Pool2dShape::new("max_pool2d", input.shape(), spec);
        let len = shape.output_shape().iter().product();
        let mut output = vec![0.0; len];
        // Argmax indices only matter to a backward pass; inference skips them.
        let mut indices = if self.requires_grad() {
            vec![0u32; len]
        } else {
            Vec::new()
        };
        let wanted = (!indices.is_empty()).then_some(&mut indices[..]);
        max_pool2d_forward(input.as_slice(), &shape, &mut output, wanted);
        let value = Tensor::from_vec(output, &shape.output_shape()).expect("output shape");
        self.tape()
            .record(value, &[self], MaxPoolBackward { indices, shape })
    }

    /// Average pooling over `[N, C, H, W]` windows (`torch.nn.functional.avg_pool2d`); padding
    /// counts as zeros, and `divisor` says whether it counts in the window size.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D, the spec has a dilation, or the window breaks the contract of
    /// [`Pool2dShape::new`].
    pub fn avg_pool2d(self, spec: Pool2dSpec, divisor: AvgDivisor) -> Var<'t> {
        let input = self.value();
        let shape = Pool2dShape::new("avg_pool2d", input.shape(), spec);
        let mut output = vec![0.0; shape.output_shape().iter().product()];
        avg_pool2d_forward(input.as_slice(), &shape, divisor, &mut output);
        let value = Tensor::from_vec(output, &shape.output_shape()).expect("output shape");
        self.tape()
            .record(value, &[self], AvgPoolBackward { shape, divisor })
    }

    /// The mean of each channel's plane: `[N, C, H, W] -> [N, C]` (Keras's
    /// `GlobalAveragePooling2D`; PyTorch's `adaptive_avg_pool2d(x, 1)` then `flatten(1)`).
    ///
    /// # Panics
    ///
    /// If the input is not 4-D.
    pub fn global_avg_pool2d(self) -> Var<'t> {
        let input = self.value();
        expect_rank("global_avg_pool2d", "input", input.shape(), 4);
        let (n, c) = (input.shape()[0], input.shape()[1]);
        let mut output = vec![0.0; n * c];
        global_avg_pool_forward(
            input.as_slice(),
            input.shape()[2] * input.shape()[3],
            &mut output,
        );
        let value = Tensor::from_vec(output, &[n, c]).expect("output shape");
        let backward = GlobalPoolBackward {
            input_shape: input.shape().to_vec(),
            indices: None,
        };
        self.tape().record(value, &[self], backward)
    }

    /// The maximum of each channel's plane: `[N, C, H, W] -> [N, C]`.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D or its planes are empty.
    pub fn global_max_pool2d(self) -> Var<'t> {
        let input = self.value();
        expect_rank("global_max_pool2d", "input", input.shape(), 4);
        let (n, c) = (input.shape()[0], input.shape()[1]);
        let (mut output, mut indices) = (vec![0.0; n * c], vec![0u32; n * c]);
        global_max_pool_forward(
            input.as_slice(),
            input.shape()[2] * input.shape()[3],
            &mut output,
            &mut indices,
        );
        let value = Tensor::from_vec(output, &[n, c]).expect("output shape");
        let backward = GlobalPoolBackward {
            input_shape: input.shape().to_vec(),
            indices: Some(indices),
        };
        self.tape().record(value, &[self], backward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::tm;
    use crate::kernels::pool::{AvgDivisor, Pool2dSpec};
    use crate::{Tape, Tensor, gradcheck};

    /// Distinct values a few eps apart keep max pooling away from ties (its kink).
    fn distinct(shape: &[usize], seed: usize) -> Tensor {
        let len: usize = shape.iter().product();
        let values: Vec<f32> = (0..len)
            .map(|i| ((i * 37 + seed * 11) % len) as f32 * 0.1 - 1.0)
            .collect();
        tm(&values, shape)
    }

    #[test]
    fn max_pool_gradient_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 7.0, 6.0], &[1, 1, 2, 4]));
        let y = x.max_pool2d(Pool2dSpec::square(2));
        assert_eq!(y.value().as_slice(), &[5.0, 7.0]);
        let grads = y.sum().backward();
        assert_eq!(
            grads.wrt(x).unwrap().as_slice(),
            &[0., 1., 0., 0., 0., 0., 1., 0.]
        );
    }

    #[test]
    fn gradcheck_max_pool_configurations() {
        let specs = [
            Pool2dSpec::square(2),
            Pool2dSpec {
                kernel: [3, 3],
                stride: [2, 2],
                padding: [1, 1],
                dilation: [1, 1],
                ceil_mode: true,
            },
            Pool2dSpec {
                kernel: [2, 3],
                stride: [1, 2],
                padding: [1, 0],
                dilation: [2, 1],
                ceil_mode: false,
            },
        ];
        for (i, spec) in specs.into_iter().enumerate() {
            for shape in [[2, 3, 5, 5], [1, 4, 4, 4], [2, 2, 7, 6]] {
                gradcheck(&[distinct(&shape, i)], |v| v[0].max_pool2d(spec)).assert_passed();
            }
        }
    }

    #[test]
    fn gradcheck_avg_pool_configurations() {
        let spec = Pool2dSpec {
            kernel: [3, 2],
            stride: [2, 1],
            padding: [1, 1],
            dilation: [1, 1],
            ceil_mode: true,
        };
        for divisor in [AvgDivisor::IncludePadding, AvgDivisor::ExcludePadding] {
            for shape in [[2, 3, 5, 5], [1, 4, 4, 4], [2, 2, 7, 6]] {
                gradcheck(&[distinct(&shape, 0)], |v| v[0].avg_pool2d(spec, divisor))
                    .assert_passed();
            }
        }
    }

    #[test]
    fn gradcheck_global_pools() {
        let x = distinct(&[2, 3, 4, 5], 3);
        gradcheck(std::slice::from_ref(&x), |v| v[0].global_avg_pool2d()).assert_passed();
        gradcheck(std::slice::from_ref(&x), |v| v[0].global_max_pool2d()).assert_passed();
        let tape = Tape::inference();
        assert_eq!(tape.input(x).global_avg_pool2d().shape(), vec![2, 3]);
    }

    #[test]
    #[should_panic(expected = "max_pool2d: window larger than the padded input")]
    fn rejects_window_larger_than_input() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[1, 1, 2, 2]))
            .max_pool2d(Pool2dSpec::square(3));
    }
}
