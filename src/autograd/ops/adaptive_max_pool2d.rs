//! `adaptive_max_pool2d`: max pooling to a fixed output size, whatever the input size.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::pool::{
    AdaptivePool2dShape, adaptive_max_pool2d_backward, adaptive_max_pool2d_forward,
};
use crate::tensor::Tensor;

#[derive(Debug)]
struct AdaptiveMaxPoolBackward {
    shape: AdaptivePool2dShape,
    indices: Vec<u32>,
    input_shape: Vec<usize>,
}

impl Backward for AdaptiveMaxPoolBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d max(bin) / dx = 1 at the bin's argmax, 0 elsewhere, summed over the bins holding x
        let mut gx = vec![0.0; self.input_shape.iter().product()];
        adaptive_max_pool2d_backward(grad_output.as_slice(), &self.indices, &self.shape, &mut gx);
        vec![Some(
            Tensor::from_vec(gx, &self.input_shape).expect("input shape"),
        )]
    }
}

impl<'t> Var<'t> {
    /// Adaptive max pooling (`torch.nn.functional.adaptive_max_pool2d`):
    /// `[N, C, H, W] -> [N, C, OH, OW]` for any `H, W`, each output the largest value of a bin
    /// chosen by PyTorch's rule ([`adaptive_bin`](crate::kernels::pool::adaptive_bin)), the
    /// same bins as [`Var::adaptive_avg_pool2d`]. The gradient goes to each bin's argmax; a NaN
    /// in a bin is its maximum (the last NaN when there are several), as in PyTorch.
    ///
    /// # Shapes
    ///
    /// Input `[N, C, H, W]`, output `[N, C, output_size[0], output_size[1]]`.
    ///
    /// # Panics
    ///
    /// If the input is not 4-D, or an input or output extent is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, 5.0, 2.0, 0.0, 3.0], &[1, 1, 1, 5]).unwrap());
    /// // bins [0, 2), [1, 4), [3, 5)
    /// assert_eq!(x.adaptive_max_pool2d([1, 3]).value().as_slice(), &[5.0, 5.0, 3.0]);
    /// ```
    pub fn adaptive_max_pool2d(self, output_size: [usize; 2]) -> Var<'t> {
        let input = self.value();
        let shape = AdaptivePool2dShape::new("adaptive_max_pool2d", input.shape(), output_size);
        let out_shape = [
            input.shape()[0],
            input.shape()[1],
            output_size[0],
            output_size[1],
        ];
        let len = out_shape.iter().product();
        let (mut output, mut indices) = (vec![0.0; len], vec![0; len]);
        adaptive_max_pool2d_forward(input.as_slice(), &shape, &mut output, &mut indices);
        let value = Tensor::from_vec(output, &out_shape).expect("output shape");
        let backward = AdaptiveMaxPoolBackward {
            shape,
            indices,
            input_shape: input.shape().to_vec(),
        };
        self.tape().record(value, &[self], backward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::kernels::pool::Pool2dSpec;
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn gradient_by_hand_with_overlapping_bins() {
        // 3 columns into 2 bins: [0, 2) and [1, 3); the middle column is the max of both
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 4.0, 2.0], &[1, 1, 1, 3]));
        let y = x.adaptive_max_pool2d([1, 2]);
        assert_eq!(y.value().as_slice(), &[4.0, 4.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[0.0, 2.0, 0.0]);
    }

    #[test]
    fn the_last_nan_of_a_bin_wins() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[f32::NAN, 7.0, f32::NAN, 1.0], &[1, 1, 1, 4]));
        let y = x.adaptive_max_pool2d([1, 1]);
        assert!(y.value().as_slice()[0].is_nan());
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn multiple_of_output_size_is_max_pooling() {
        let x = rand_tensor(&[2, 3, 12, 8], 7);
        let tape = Tape::inference();
        let adaptive = tape.input(x.clone()).adaptive_max_pool2d([6, 4]).value();
        let plain = tape.input(x).max_pool2d(Pool2dSpec::square(2)).value();
        assert_eq!(adaptive.as_slice(), plain.as_slice());
    }

    #[test]
    fn gradcheck_shrinking_growing_and_uneven() {
        for (shape, out) in [
            ([2, 2, 5, 7], [3, 2]),
            ([1, 3, 4, 4], [7, 7]),
            ([2, 1, 6, 9], [1, 1]),
            ([1, 2, 9, 10], [4, 3]),
        ] {
            // distinct values, well apart, so no bin has a near-tie within the step
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|i| ((i * 37) % n) as f32 * 0.1)
                .collect::<Vec<_>>();
            let x = tm(&values, &shape);
            gradcheck(&[x], |v| v[0].adaptive_max_pool2d(out)).assert_passed();
        }
    }

    #[test]
    #[should_panic(expected = "adaptive_max_pool2d: input must be 4-D")]
    fn rejects_a_3d_input() {
        let tape = Tape::inference();
        tape.input(Tensor::zeros(&[1, 4, 4]))
            .adaptive_max_pool2d([2, 2]);
    }
}
