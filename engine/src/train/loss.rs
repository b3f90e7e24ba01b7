//! Losses on a batch of logits.

use crate::tensor::Tensor;
use crate::{Error, Result};

/// Mean softmax cross-entropy of `logits` (`[n, classes]`) against `labels`; returns the loss,
/// its gradient w.r.t. the logits, and how many rows were predicted correctly.
pub fn cross_entropy(logits: &Tensor, labels: &[u8]) -> Result<(f32, Tensor, usize)> {
    let s = logits.shape();
    if s.len() != 2 || s[0] != labels.len() {
        return Err(Error::Invalid(format!(
            "cross-entropy needs [n, classes] logits for {} labels, got {:?}",
            labels.len(),
            s
        )));
    }
    let (n, c) = (s[0], s[1]);
    let x = crate::tensor::to_contiguous(logits);
    let mut grad = vec![0.0f32; n * c];
    let mut loss = 0.0f64;
    let mut correct = 0;
    for i in 0..n {
        let row = &x[i * c..(i + 1) * c];
        let y = labels[i] as usize;
        if y >= c {
            return Err(Error::Invalid(format!(
                "label {y} is not below the class count {c}"
            )));
        }
        let (arg, mx) = argmax(row);
        if arg == y {
            correct += 1;
        }
        let sum: f32 = row.iter().map(|v| (v - mx).exp()).sum();
        loss += (sum.ln() + mx - row[y]) as f64;
        for k in 0..c {
            let p = (row[k] - mx).exp() / sum;
            grad[i * c + k] = (p - if k == y { 1.0 } else { 0.0 }) / n as f32;
        }
    }
    let g = Tensor::from_shape_vec(ndarray::IxDyn(&[n, c]), grad)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(((loss / n.max(1) as f64) as f32, g, correct))
}

/// Index and value of the largest entry (first on ties); `(0, -inf)` for an empty row.
pub fn argmax(row: &[f32]) -> (usize, f32) {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_matches_hand_values_and_finite_differences() {
        let x = crate::tensor::from_vec(&[2, 3], vec![1.0, 2.0, 3.0, 0.5, 0.5, -1.0]).unwrap();
        let (l, g, c) = cross_entropy(&x, &[2, 0]).unwrap();
        // -log softmax: row0 label2 = log(e1+e2+e3) - 3; row1 label0 = log(2e^.5+e^-1) - .5
        let r0 = (1f32.exp() + 2f32.exp() + 3f32.exp()).ln() - 3.0;
        let r1 = (2.0 * 0.5f32.exp() + (-1f32).exp()).ln() - 0.5;
        assert!((l - (r0 + r1) / 2.0).abs() < 1e-6);
        assert_eq!(c, 2);
        let eps = 1e-3;
        for k in 0..6 {
            let mut xp = x.clone();
            xp.as_slice_mut().unwrap()[k] += eps;
            let mut xm = x.clone();
            xm.as_slice_mut().unwrap()[k] -= eps;
            let fd = (cross_entropy(&xp, &[2, 0]).unwrap().0
                - cross_entropy(&xm, &[2, 0]).unwrap().0)
                / (2.0 * eps);
            assert!((fd - g.as_slice().unwrap()[k]).abs() < 1e-3);
        }
        assert!(cross_entropy(&x, &[3, 0]).is_err());
    }
}
