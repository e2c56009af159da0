//! `matmul`: matrix products, plain and batched, through the crate's one GEMM.

use rayon::prelude::*;

use crate::autograd::tape::Backward;
use crate::autograd::var::Var;
use crate::kernels::gemm::{MatMut, MatRef, gemm};
use crate::tensor::Tensor;
use crate::tensor::check::{contract_violation, shape_str};

/// How one operand of a batched product is stored: `rows x cols` per batch entry, row-major,
/// `transposed` when the buffer holds the matrix's transpose, `shared` when one matrix serves
/// every batch entry.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
    shared: bool,
}

impl<'a> Operand<'a> {
    fn plain(data: &'a [f32], rows: usize, cols: usize, shared: bool) -> Self {
        Operand {
            data,
            rows,
            cols,
            transposed: false,
            shared,
        }
    }

    fn t(self) -> Self {
        Operand {
            rows: self.cols,
            cols: self.rows,
            transposed: !self.transposed,
            ..self
        }
    }

    fn matrix(&self, batch_index: usize) -> MatRef<'a> {
        let size = self.rows * self.cols;
        let start = if self.shared { 0 } else { batch_index * size };
        let data = &self.data[start..start + size];
        if self.transposed {
            MatRef::row_major(data, self.cols, self.rows).t()
        } else {
            MatRef::row_major(data, self.rows, self.cols)
        }
    }
}

/// `out[b] = lhs[b] · rhs[b]` for `b < batch`; parallel over the batch when there is one.
fn batched_product(batch: usize, lhs: Operand<'_>, rhs: Operand<'_>) -> Vec<f32> {
    let (m, n) = (lhs.rows, rhs.cols);
    let mut out = vec![0.0f32; batch * m * n];
    if batch == 1 || m * n == 0 {
        if m * n > 0 {
            gemm(
                1.0,
                lhs.matrix(0),
                rhs.matrix(0),
                0.0,
                MatMut::row_major(&mut out, m, n),
            );
        }
        return out;
    }
    crate::util::threads::split(|| {
        out.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(b, chunk)| {
                gemm(
                    1.0,
                    lhs.matrix(b),
                    rhs.matrix(b),
                    0.0,
                    MatMut::row_major(chunk, m, n),
                );
            })
    });
    out
}

/// The layout of a product: `[batch, m, k] · [batch?, k, n]`, with `rhs_shared` when the rhs is
/// one 2-D matrix for every batch entry.
#[derive(Debug, Clone, Copy)]
struct Layout {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    lhs_batched: bool,
    rhs_shared: bool,
}

fn layout(lhs: &[usize], rhs: &[usize]) -> Layout {
    let context = || format!("lhs {}, rhs {}", shape_str(lhs), shape_str(rhs));
    let (batch, m, k, lhs_batched) = match *lhs {
        [m, k] => (1, m, k, false),
        [b, m, k] => (b, m, k, true),
        _ => contract_violation(
            "matmul",
            "lhs must be 2-D [m, k] or 3-D [batch, m, k]",
            context(),
        ),
    };
    let (rhs_batch, rhs_k, n, rhs_shared) = match *rhs {
        [k, n] => (batch, k, n, true),
        [b, k, n] if lhs_batched => (b, k, n, false),
        _ => contract_violation(
            "matmul",
            "rhs must be 2-D [k, n], or 3-D [batch, k, n] with a 3-D lhs",
            context(),
        ),
    };
    if rhs_k != k {
        contract_violation(
            "matmul",
            format_args!("inner dimensions {k} != {rhs_k}"),
            context(),
        );
    }
    if rhs_batch != batch {
        contract_violation(
            "matmul",
            format_args!("batch sizes {batch} != {rhs_batch}"),
            context(),
        );
    }
    Layout {
        batch,
        m,
        k,
        n,
        lhs_batched,
        rhs_shared,
    }
}

#[derive(Debug)]
struct MatmulBackward {
    lhs: Tensor,
    rhs: Tensor,
    layout: Layout,
}

impl Backward for MatmulBackward {
    fn backward(&self, grad_output: Tensor, needs_grad: &[bool]) -> Vec<Option<Tensor>> {
        let Layout {
            batch,
            m,
            k,
            n,
            rhs_shared,
            ..
        } = self.layout;
        let g = grad_output.as_slice();
        // dA = G · Bᵀ
        let grad_lhs = needs_grad[0].then(|| {
            let grad = Operand::plain(g, m, n, false);
            let rhs = Operand::plain(self.rhs.as_slice(), k, n, rhs_shared).t();
            let data = batched_product(batch, grad, rhs);
            Tensor::from_vec(data, self.lhs.shape()).expect("lhs shape")
        });
        // dB = Aᵀ · G; a shared rhs collects every batch entry: Σ_b A_bᵀ G_b = [bm, k]ᵀ · [bm, n]
        let grad_rhs = needs_grad[1].then(|| {
            let data = if rhs_shared {
                let lhs = Operand::plain(self.lhs.as_slice(), batch * m, k, false).t();
                batched_product(1, lhs, Operand::plain(g, batch * m, n, false))
            } else {
                let lhs = Operand::plain(self.lhs.as_slice(), m, k, false).t();
                batched_product(batch, lhs, Operand::plain(g, m, n, false))
            };
            Tensor::from_vec(data, self.rhs.shape()).expect("rhs shape")
        });
        vec![grad_lhs, grad_rhs]
    }
}

impl<'t> Var<'t> {
    /// Matrix product: `[m, k] · [k, n] -> [m, n]`, batched `[b, m, k] · [b, k, n] -> [b, m, n]`,
    /// or `[b, m, k] · [k, n] -> [b, m, n]` with one rhs for the whole batch.
    ///
    /// # Panics
    ///
    /// If the ranks are not one of the above, the inner dimensions differ, or batch sizes
    /// differ.
    ///
    /// # Examples
    ///
    /// ```
    /// use striate::{Tape, Tensor};
    ///
    /// let tape = Tape::inference();
    /// let a = tape.input(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
    /// let b = tape.input(Tensor::from_vec(vec![5.0, 6.0, 7.0, 8.0], &[2, 2]).unwrap());
    /// assert_eq!(a.matmul(b).value().as_slice(), &[19.0, 22.0, 43.0, 50.0]);
    /// ```
    pub fn matmul(self, rhs: Var<'t>) -> Var<'t> {
        let (lhs_value, rhs_value) = (self.value(), rhs.value());
        let layout = layout(lhs_value.shape(), rhs_value.shape());
        let Layout { batch, m, k, n, .. } = layout;
        let data = if layout.rhs_shared {
            // One rhs: the batch folds into the rows of a single product.
            let lhs = Operand::plain(lhs_value.as_slice(), batch * m, k, false);
            batched_product(1, lhs, Operand::plain(rhs_value.as_slice(), k, n, true))
        } else {
            let lhs = Operand::plain(lhs_value.as_slice(), m, k, false);
            batched_product(
                batch,
                lhs,
                Operand::plain(rhs_value.as_slice(), k, n, false),
            )
        };
        let shape: Vec<usize> = if layout.lhs_batched {
            vec![batch, m, n]
        } else {
            vec![m, n]
        };
        let value = Tensor::from_vec(data, &shape).expect("product shape");
        self.tape().record(
            value,
            &[self, rhs],
            MatmulBackward {
                lhs: lhs_value,
                rhs: rhs_value,
                layout,
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
        let a = tape.variable(tm(&[1.0, 2.0, 3.0, 4.0], &[2, 2]));
        let b = tape.variable(tm(&[5.0, 6.0, 7.0, 8.0], &[2, 2]));
        let grads = a.matmul(b).sum().backward();
        // d Σ(AB) / dA = 1·Bᵀ: row sums of B; d/dB = Aᵀ·1: column sums of A
        assert_eq!(grads.wrt(a).unwrap().as_slice(), &[11.0, 15.0, 11.0, 15.0]);
        assert_eq!(grads.wrt(b).unwrap().as_slice(), &[4.0, 4.0, 6.0, 6.0]);
    }

    #[test]
    fn batched_matches_per_item_products() {
        let tape = Tape::inference();
        let a = rand_tensor(&[3, 4, 5], 21);
        let b = rand_tensor(&[3, 5, 2], 22);
        let c = tape.input(a.clone()).matmul(tape.input(b.clone())).value();
        for i in 0..3 {
            let ci = tape
                .input(a.select(0, i))
                .matmul(tape.input(b.select(0, i)))
                .value();
            assert!(c.select(0, i).all_close(&ci, 1e-6, 1e-6));
        }
    }

    #[test]
    fn gradcheck_matmul_all_layouts() {
        gradcheck(&[rand_tensor(&[3, 4], 23), rand_tensor(&[4, 5], 24)], |v| {
            v[0].matmul(v[1])
        })
        .assert_passed();
        gradcheck(
            &[rand_tensor(&[2, 3, 4], 25), rand_tensor(&[2, 4, 5], 26)],
            |v| v[0].matmul(v[1]),
        )
        .assert_passed();
        gradcheck(
            &[rand_tensor(&[2, 3, 4], 27), rand_tensor(&[4, 5], 28)],
            |v| v[0].matmul(v[1]),
        )
        .assert_passed();
    }

    #[test]
    #[should_panic(expected = "matmul: inner dimensions 3 != 4 (lhs [2, 3], rhs [4, 5])")]
    fn rejects_inner_mismatch() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 3]))
            .matmul(tape.input(Tensor::zeros(&[4, 5])));
    }

    #[test]
    #[should_panic(expected = "matmul: batch sizes 2 != 3 (lhs [2, 3, 4], rhs [3, 4, 5])")]
    fn rejects_batch_mismatch() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[2, 3, 4]))
            .matmul(tape.input(Tensor::zeros(&[3, 4, 5])));
    }

    #[test]
    #[should_panic(
        expected = "matmul: lhs must be 2-D [m, k] or 3-D [batch, m, k] (lhs [4], rhs [4, 5])"
    )]
    fn rejects_vectors() {
        let tape = Tape::training();
        tape.input(Tensor::zeros(&[4]))
            .matmul(tape.input(Tensor::zeros(&[4, 5])));
    }
}
