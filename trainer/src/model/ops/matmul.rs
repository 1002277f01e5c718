//! `dst = (dst +) a·b` on strided views, through the `gemm` crate (the kernel candle's CPU matmul calls).

use gemm::Parallelism;

use super::Real;

/// A matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// The row-major `rows × cols` matrix at the start of `data`.
    pub(crate) fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transposed view (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst[m × n]` (row-major) `= a·b`, or `+= a·b` with `accumulate`. `threads` lets gemm split the
/// product over rayon's pool; callers already inside a parallel task pass `false`.
///
/// # Panics
/// When the shapes do not chain or a view reaches past its slice.
pub(crate) fn matmul<T: Real>(
    dst: &mut [T],
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    accumulate: bool,
    threads: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions differ");
    assert!(
        dst.len() >= m * n && a.fits() && b.fits(),
        "matmul: view out of bounds"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    let parallelism = match rayon::current_num_threads() {
        t if threads && t > 1 => Parallelism::Rayon(t),
        _ => Parallelism::None,
    };
    // SAFETY: the asserts above keep every index gemm computes from the sizes and strides inside
    // `dst`, `a.data` and `b.data`; `dst` is borrowed mutably, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_with_a_transposed_view_and_accumulation_matches_the_naive_sum() {
        // a [2×3], b given as [2×3] and used transposed: a·bᵀ is [2×2].
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, -1.0, 2.0, 1.0, 0.0];
        let mut dst = [10.0f64; 4];
        matmul(
            &mut dst,
            Mat::new(&a, 2, 3),
            Mat::new(&b, 2, 3).t(),
            true,
            false,
        );
        assert_eq!(dst, [10.0 - 2.0, 10.0 + 4.0, 10.0 - 2.0, 10.0 + 13.0]);
    }
}
