//! `numpy.matmul` over batches: each matrix product through the path's
//! `matmul_into` kernel.

use alloc::vec::Vec;

use crate::elementwise::MAX_RANK;
use crate::shape;
use crate::{Kernels, OpError};

const OP: &str = "batched_matmul";

/// A validated batched product: the broadcast batch dims, each operand's
/// element stride per batch dim (0 where broadcast) and the matrix sizes.
struct Plan {
    batch: [usize; MAX_RANK],
    sa: [usize; MAX_RANK],
    sb: [usize; MAX_RANK],
    nb: usize,
    m: usize,
    k: usize,
    n: usize,
    /// Whether the 1-D operand's added dim is dropped from the output.
    a_vec: bool,
    b_vec: bool,
}

impl Plan {
    fn new(a_shape: &[usize], b_shape: &[usize]) -> Result<Plan, OpError> {
        if a_shape.is_empty() || b_shape.is_empty() {
            return Err(OpError::BadParameter { op: OP, reason: "operands must have rank >= 1" });
        }
        if a_shape.len() > MAX_RANK || b_shape.len() > MAX_RANK {
            return Err(OpError::BadParameter { op: OP, reason: "at most 8 dims are supported" });
        }
        let mismatch =
            || OpError::ShapeMismatch { op: OP, left: a_shape.to_vec(), right: b_shape.to_vec() };
        let (ra, rb) = (a_shape.len(), b_shape.len());
        let (a_vec, b_vec) = (ra == 1, rb == 1);
        let (a_batch, m, k) = if a_vec {
            (&[][..], 1, a_shape[0])
        } else {
            (&a_shape[..ra - 2], a_shape[ra - 2], a_shape[ra - 1])
        };
        let (b_batch, k2, n) = if b_vec {
            (&[][..], b_shape[0], 1)
        } else {
            (&b_shape[..rb - 2], b_shape[rb - 2], b_shape[rb - 1])
        };
        if k != k2 {
            return Err(mismatch());
        }
        let nb = a_batch.len().max(b_batch.len());
        let (pa, pb) = (nb - a_batch.len(), nb - b_batch.len());
        let mut plan = Plan {
            batch: [1; MAX_RANK],
            sa: [0; MAX_RANK],
            sb: [0; MAX_RANK],
            nb,
            m,
            k,
            n,
            a_vec,
            b_vec,
        };
        let overflow =
            OpError::BadParameter { op: OP, reason: "shape's element count overflows usize" };
        let mut run_a = m.checked_mul(k).ok_or(overflow.clone())?;
        let mut run_b = k.checked_mul(n).ok_or(overflow.clone())?;
        for i in (0..nb).rev() {
            let da = if i < pa { 1 } else { a_batch[i - pa] };
            let db = if i < pb { 1 } else { b_batch[i - pb] };
            plan.batch[i] = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return Err(mismatch()),
            };
            plan.sa[i] = if da == 1 { 0 } else { run_a };
            plan.sb[i] = if db == 1 { 0 } else { run_b };
            run_a = run_a.checked_mul(da).ok_or(overflow.clone())?;
            run_b = run_b.checked_mul(db).ok_or(overflow.clone())?;
        }
        Ok(plan)
    }

    /// The output shape's dims, in order.
    fn out_dims(&self) -> impl Iterator<Item = usize> + '_ {
        let m = (!self.a_vec).then_some(self.m);
        let n = (!self.b_vec).then_some(self.n);
        self.batch[..self.nb].iter().copied().chain(m).chain(n)
    }
}

/// The output shape of [`batched_matmul_into`]: `numpy.matmul`'s (1-D
/// operands promoted, their added dim removed again; batch dims
/// broadcast). Allocates (for planning).
pub fn batched_matmul_shape(a_shape: &[usize], b_shape: &[usize]) -> Result<Vec<usize>, OpError> {
    let plan = Plan::new(a_shape, b_shape)?;
    let dims: Vec<usize> = plan.out_dims().collect();
    shape::numel(OP, &dims)?;
    Ok(dims)
}

impl Kernels {
    /// `numpy.matmul(a, b)` into `out` (exactly the element count of
    /// [`batched_matmul_shape`]): a 1-D `a` is a row vector, a 1-D `b` a
    /// column vector, batch dims broadcast. Each product runs this path's
    /// [`Kernels::matmul_into`]. At most 8 dims; allocates nothing on
    /// success.
    pub fn batched_matmul_into(
        &self,
        a: &[f32],
        a_shape: &[usize],
        b: &[f32],
        b_shape: &[usize],
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let plan = Plan::new(a_shape, b_shape)?;
        shape::check_len(OP, "a", a.len(), a_shape)?;
        shape::check_len(OP, "b", b.len(), b_shape)?;
        let mut total = 1usize;
        for d in plan.out_dims() {
            total = total.checked_mul(d).ok_or(OpError::BadParameter {
                op: OP,
                reason: "shape's element count overflows usize",
            })?;
        }
        if out.len() != total {
            return Err(OpError::LengthMismatch {
                op: OP,
                what: "out",
                expected: total,
                actual: out.len(),
            });
        }
        let (m, k, n) = (plan.m, plan.k, plan.n);
        if total == 0 {
            return Ok(());
        }
        let mut counter = [0usize; MAX_RANK];
        let (mut oa, mut ob) = (0usize, 0usize);
        for c in out.chunks_exact_mut(m * n) {
            self.matmul_into(&a[oa..oa + m * k], &b[ob..ob + k * n], c, m, k, n)?;
            for i in (0..plan.nb).rev() {
                counter[i] += 1;
                oa += plan.sa[i];
                ob += plan.sb[i];
                if counter[i] < plan.batch[i] {
                    break;
                }
                counter[i] = 0;
                oa -= plan.sa[i] * plan.batch[i];
                ob -= plan.sb[i] * plan.batch[i];
            }
        }
        Ok(())
    }
}

/// `numpy.matmul(a, b)` into `out`; see [`Kernels::batched_matmul_into`].
/// Runs on [`Kernels::active`].
pub fn batched_matmul_into(
    a: &[f32],
    a_shape: &[usize],
    b: &[f32],
    b_shape: &[usize],
    out: &mut [f32],
) -> Result<(), OpError> {
    Kernels::active().batched_matmul_into(a, a_shape, b, b_shape, out)
}
