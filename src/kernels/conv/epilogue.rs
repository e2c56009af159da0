//! What the forward kernels do to each output as they store it, while it is still in a
//! register: add its output channel's bias, then apply the fused activation. One pass over the
//! outputs instead of two more.

use super::shape::ConvActivation;
use crate::kernels::gemm;
use crate::kernels::vector::Vector;

/// The bias (one value per output row the kernel stores, or none) and the activation.
#[derive(Clone, Copy, Default)]
pub(super) struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub activation: ConvActivation,
}

impl<'a> Epilogue<'a> {
    /// The part of this epilogue for output rows `first..first + rows`.
    pub fn rows(self, first: usize, rows: usize) -> Epilogue<'a> {
        Epilogue {
            bias: self.bias.map(|bias| &bias[first..first + rows]),
            ..self
        }
    }

    /// The same epilogue for a GEMM whose rows are the output channels.
    pub fn for_gemm(self) -> gemm::Epilogue<'a> {
        gemm::Epilogue {
            bias: self.bias.map_or(gemm::Bias::None, gemm::Bias::PerRow),
            relu: self.activation == ConvActivation::Relu,
        }
    }

    /// The activation of one vector of finished outputs.
    #[inline(always)]
    pub fn activate<V: Vector>(self, y: V) -> V {
        match self.activation {
            ConvActivation::Identity => y,
            ConvActivation::Relu => y.relu(),
        }
    }

    /// Bias, then activation, of one vector of output row `row`'s sums.
    ///
    /// # Safety
    ///
    /// The CPU supports `V`'s instruction set.
    #[inline(always)]
    pub unsafe fn apply<V: Vector>(self, row: usize, y: V) -> V {
        let y = match self.bias {
            // SAFETY: the caller's contract.
            Some(bias) => y.add(unsafe { V::splat(bias[row]) }),
            None => y,
        };
        self.activate(y)
    }
}
