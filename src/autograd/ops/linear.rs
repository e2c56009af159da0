//! `linear`: `x · Wᵀ + b` with PyTorch's `[out, in]` weight, through the GEMM with no transpose
//! copy.

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::gemm::{Bias, Epilogue, MatMut, MatRef, gemm, gemm_with_epilogue};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};
use crate::tensor::reduce::sum_axes_keepdim;

#[derive(Debug)]
struct LinearBackward {
    input: Tensor,
    weight: Tensor,
}

impl Backward for LinearBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        let (out_features, in_features) = (self.weight.shape()[0], self.weight.shape()[1]);
        let rows: usize = self.input.shape()[..self.input.ndim() - 1].iter().product();
        let g = MatRef::row_major(grad_output.as_slice(), rows, out_features);
        // dX = dY · W
        let grad_input = needs_grad[0].then(|| {
            let mut gx = vec![0.0; self.input.len()];
            let w = MatRef::row_major(self.weight.as_slice(), out_features, in_features);
            gemm(
                1.0,
                g,
                w,
                0.0,
                MatMut::row_major(&mut gx, rows, in_features),
            );
            Tensor::from_vec(gx, self.input.shape()).expect("input shape")
        });
        // dW = dYᵀ · X
        let grad_weight = needs_grad[1].then(|| {
            let mut gw = vec![0.0; self.weight.len()];
            let x = MatRef::row_major(self.input.as_slice(), rows, in_features);
            gemm(
                1.0,
                g.t(),
                x,
                0.0,
                MatMut::row_major(&mut gw, out_features, in_features),
            );
            Tensor::from_vec(gw, self.weight.shape()).expect("weight shape")
        });
        let mut grads = vec![grad_input, grad_weight];
        // db = Σ_rows dY
        if needs_grad.len() == 3 {
            grads.push(needs_grad[2].then(|| {
                let flat = grad_output.reshape(&[rows, out_features]);
                sum_axes_keepdim(&flat, "linear", &[0]).reshape(&[out_features])
            }));
        }
        grads
    }
}

impl<'t> Var<'t> {
    /// Affine map `x · Wᵀ + b` over the last axis, with `weight` `[out, in]` and `bias` `[out]`
    /// (`torch.nn.functional.linear`).
    ///
    /// # Shapes
    ///
    /// Input `[..., in]`, output `[..., out]`.
    ///
    /// # Panics
    ///
    /// If the weight is not 2-D, the input's last axis differs from `in`, or the bias is not
    /// `[out]`.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let x = tape.input(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]).unwrap());
    /// let w = tape.input(Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]).unwrap());
    /// let b = tape.input(Tensor::from_vec(vec![0.0, 0.0, 0.5], &[3]).unwrap());
    /// assert_eq!(x.linear(w, Some(b)).value().as_slice(), &[1.0, 2.0, 3.5]);
    /// ```
    pub fn linear(self, weight: Var<'t>, bias: Option<Var<'t>>) -> Var<'t> {
        let (input, weight_value) = (self.value(), weight.value());
        let context = || {
            format!(
                "input {}, weight {}",
                shape_str(input.shape()),
                shape_str(weight_value.shape())
            )
        };
        if weight_value.ndim() != 2 || input.ndim() == 0 {
            contract_violation(
                "linear",
                "weight must be 2-D [out, in] and input at least 1-D",
                context(),
            );
        }
        let (out_features, in_features) = (weight_value.shape()[0], weight_value.shape()[1]);
        if input.shape()[input.ndim() - 1] != in_features {
            contract_violation(
                "linear",
                format_args!(
                    "input features {} != weight in_features {in_features}",
                    input.shape()[input.ndim() - 1]
                ),
                context(),
            );
        }
        let bias_value = bias.map(|b| b.value());
        if let Some(b) = &bias_value
            && b.shape() != [out_features]
        {
            contract_violation(
                "linear",
                format_args!("bias must be [{out_features}]"),
                format_args!("bias {}", shape_str(b.shape())),
            );
        }
        // Every axis but the last, counted from the shape (not len / in_features: with zero
        // input features there are still rows, each the bias, as in PyTorch).
        let rows: usize = input.shape()[..input.ndim() - 1].iter().product();
        let mut output = vec![0.0; rows * out_features];
        // The bias is added as the product stores each tile.
        let epilogue = Epilogue {
            bias: bias_value
                .as_ref()
                .map_or(Bias::None, |b| Bias::PerColumn(b.as_slice())),
            relu: false,
        };
        gemm_with_epilogue(
            1.0,
            MatRef::row_major(input.as_slice(), rows, in_features),
            MatRef::row_major(weight_value.as_slice(), out_features, in_features).t(),
            0.0,
            MatMut::row_major(&mut output, rows, out_features),
            epilogue,
        );
        let mut shape = input.shape().to_vec();
        *shape.last_mut().expect("rank ≥ 1") = out_features;
        let value = Tensor::from_vec(output, &shape).expect("output shape");
        let inputs: Vec<Var<'t>> = [Some(self), Some(weight), bias]
            .into_iter()
            .flatten()
            .collect();
        self.tape().record(
            value,
            &inputs,
            LinearBackward {
                input,
                weight: weight_value,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::autograd::test_util::{rand_tensor, tm};
    use crate::{Tape, Tensor, gradcheck};

    #[test]
    fn value_and_gradients_by_hand() {
        let tape = Tape::training();
        let x = tape.variable(tm(&[1.0, 2.0], &[1, 2]));
        let w = tape.variable(tm(&[3.0, 4.0], &[1, 2]));
        let b = tape.variable(tm(&[0.5], &[1]));
        let y = x.linear(w, Some(b));
        assert_eq!(y.value().as_slice(), &[11.5]);
        let grads = y.sum().backward();
        assert_eq!(grads.wrt(x).unwrap().as_slice(), &[3.0, 4.0]);
        assert_eq!(grads.wrt(w).unwrap().as_slice(), &[1.0, 2.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[1.0]);
    }

    #[test]
    fn matches_matmul_with_transposed_weight() {
        let tape = Tape::inference();
        let x = tape.input(rand_tensor(&[5, 3], 60));
        let w = tape.input(rand_tensor(&[4, 3], 61));
        let a = x.linear(w, None).value();
        let b = x.matmul(w.t()).value();
        assert!(a.all_close(&b, 1e-6, 1e-6));
    }

    #[test]
    fn gradcheck_linear() {
        let inputs = [
            rand_tensor(&[2, 3, 5], 62),
            rand_tensor(&[4, 5], 63),
            rand_tensor(&[4], 64),
        ];
        gradcheck(&inputs, |v| v[0].linear(v[1], Some(v[2]))).assert_passed();
        gradcheck(&inputs[..2], |v| v[0].linear(v[1], None)).assert_passed();
    }

    #[test]
    #[should_panic(
        expected = "linear: input features 3 != weight in_features 5 (input [2, 3], weight [4, 5])"
    )]
    fn rejects_feature_mismatch() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 3]))
            .linear(tape.input(Tensor::zeros(&[4, 5])), None);
    }
}
