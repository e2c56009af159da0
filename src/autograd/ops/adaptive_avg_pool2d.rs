//! `adaptive_avg_pool2d`: average pooling to a fixed output size, whatever the input size.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::pool::{
    AdaptivePool2dShape, adaptive_avg_pool2d_backward, adaptive_avg_pool2d_forward,
};
use crate::tensor::Tensor;

#[derive(Debug)]
struct AdaptiveAvgPoolBackward {
    shape: AdaptivePool2dShape,
    input_shape: Vec<usize>,
}

impl Backward for AdaptiveAvgPoolBackward {
    fn backward(&self, grad_output: Tensor, _: &[bool]) -> Vec<Option<Tensor>> {
        // d mean(bin) / dx = 1/|bin| for every x in the bin, summed over the bins holding x
        let mut gx = vec![0.0; self.input_shape.iter().product()];
        adaptive_avg_pool2d_backward(grad_output.as_slice(), &self.shape, &mut gx);
        vec![Some(
            Tensor::from_vec(gx, &self.input_shape).expect("input shape"),
        )]
    }
}

impl<'t> Var<'t> {
    /// Adaptive average pooling (`torch.nn.functional.adaptive_avg_pool2d`):
    /// `[N, C, H, W] -> [N, C, OH, OW]` for any `H, W`, each output the mean of a bin chosen by
    /// PyTorch's rule ([`adaptive_bin`](crate::kernels::pool::adaptive_bin)). When `H` and `W`
    /// are multiples of the output size this is plain average pooling; otherwise neighbouring
    /// bins may share a row or column.
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
    /// let x = tape.input(Tensor::arange(1.0, 6.0, 1.0).reshape(&[1, 1, 1, 5]));
    /// // bins [0, 2), [1, 4), [3, 5)
    /// assert_eq!(x.adaptive_avg_pool2d([1, 3]).value().as_slice(), &[1.5, 3.0, 4.5]);
    /// ```
    pub fn adaptive_avg_pool2d(self, output_size: [usize; 2]) -> Var<'t> {
        let input = self.value();
        let shape = AdaptivePool2dShape::new("adaptive_avg_pool2d", input.shape(), output_size);
        let out_shape = [
            input.shape()[0],
            input.shape()[1],
            output_size[0],
            output_size[1],
        ];
        let mut output = vec![0.0; out_shape.iter().product()];
        adaptive_avg_pool2d_forward(input.as_slice(), &shape, &mut output);
        let value = Tensor::from_vec(output, &out_shape).expect("output shape");
        let backward = AdaptiveAvgPoolBackward {
            shape,
            input_shape: input.shape().to_vec(),
        };
        self.tape().record(value, &[self], backward)
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::kernels::pool::{AvgDivisor, Pool2dSpec};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn gradient_by_hand_with_overlapping_bins() {
        // 3 columns into 2 bins: [0, 2) and [1, 3); the middle column is in both
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0, 4.0], &[1, 1, 1, 3]));
        let y = x.adaptive_avg_pool2d([1, 2]);
        assert_eq!(y.value().as_slice(), &[1.5, 3.0]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[0.5, 1.0, 0.5]);
    }

    #[test]
    fn multiple_of_output_size_is_average_pooling() {
        let x = rand_tensor(&[2, 3, 14, 14], 5);
        let tape = Tape::inference();
        let adaptive = tape.input(x.clone()).adaptive_avg_pool2d([7, 7]).value();
        let plain = tape
            .input(x)
            .avg_pool2d(Pool2dSpec::square(2), AvgDivisor::IncludePadding)
            .value();
        assert!(adaptive.all_close(&plain, 1e-6, 1e-6));
    }

    #[test]
    fn gradcheck_shrinking_growing_and_uneven() {
        for (shape, out) in [
            ([2, 2, 5, 7], [3, 2]),
            ([1, 3, 4, 4], [7, 7]),
            ([2, 1, 6, 9], [1, 1]),
            ([1, 2, 9, 10], [4, 3]),
        ] {
            let x = rand_tensor(&shape, 3);
            gradcheck(&[x], |v| v[0].adaptive_avg_pool2d(out)).assert_passed();
        }
    }

    #[test]
    #[should_panic(expected = "adaptive_avg_pool2d: input and output sizes must be positive")]
    fn rejects_empty_output() {
        let tape = Tape::inference();
        tape.input(Tensor::zeros(&[1, 1, 4, 4]))
            .adaptive_avg_pool2d([0, 2]);
    }
}
