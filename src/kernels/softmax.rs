//! Row-wise softmax and log-softmax on contiguous rows, stable for any finite logits:
//! `softmax(x)_i = e^(x_i - m) / Σ_j e^(x_j - m)` with `m = max_j x_j`, so no exponent is
//! positive and logits of magnitude 1e4 neither overflow nor lose the largest term.

/// Replaces each row of `data` (rows of `width` values) with its softmax.
///
/// # Examples
///
/// ```
/// use striate::kernels::softmax::softmax_rows;
///
/// let mut x = [1e4, 1e4, -1e4];
/// softmax_rows(&mut x, 3);
/// assert_eq!(x, [0.5, 0.5, 0.0]);
/// ```
pub fn softmax_rows(data: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in data.chunks_mut(width) {
        let max = row_max(row);
        let mut total = 0.0f32;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            total += *x;
        }
        let inverse = 1.0 / total;
        row.iter_mut().for_each(|x| *x *= inverse);
    }
}

/// Replaces each row of `data` (rows of `width` values) with its log-softmax,
/// `(x_i - m) - ln Σ_j e^(x_j - m)`.
///
/// The brackets matter: `x_i - (m + ln Σ)` rounds `m + ln Σ` at the magnitude of `m`, which at
/// logits of 1e4 is a step of 1e-3 (PyTorch subtracts in this order too).
pub fn log_softmax_rows(data: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in data.chunks_mut(width) {
        let max = row_max(row);
        let total: f32 = row.iter().map(|&x| (x - max).exp()).sum();
        let log_total = total.ln();
        row.iter_mut().for_each(|x| *x = (*x - max) - log_total);
    }
}

/// The largest value of a row; a row of `-inf` gives 0 so that `x - max` stays `-inf`. A NaN
/// anywhere makes the whole row NaN afterwards (through its exponential in the sum), as in
/// PyTorch.
fn row_max(row: &[f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY { 0.0 } else { max }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_on_moderate_logits() {
        let x = [0.5f32, -1.0, 2.0, 0.0, 3.0, 1.0];
        let mut s = x;
        softmax_rows(&mut s, 3);
        let mut ls = x;
        log_softmax_rows(&mut ls, 3);
        for r in 0..2 {
            let row = &x[r * 3..r * 3 + 3];
            let total: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
            for c in 0..3 {
                let p = (row[c] as f64).exp() / total;
                assert!((s[r * 3 + c] as f64 - p).abs() < 1e-6);
                assert!((ls[r * 3 + c] as f64 - p.ln()).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn exact_for_huge_logits() {
        let mut ls = [1e4f32, 0.0, -1e4];
        log_softmax_rows(&mut ls, 3);
        assert_eq!(ls, [0.0, -1e4, -2e4]);
    }
}
