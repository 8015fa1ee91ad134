//! Models before opset 7 (PyTorch 0.3 and Caffe2 exports, the first
//! model-zoo files): the attributes later opsets dropped, read as those
//! opsets would write the node.
//!
//! - `consumed_inputs` (before opset 6) said which inputs an op may
//!   overwrite: a memory hint, without effect on the values.
//! - `is_test` (Dropout, BatchNormalization before opset 7): 1 is what
//!   later opsets compute; 0 asks for training (random dropout, batch
//!   statistics), which is refused.
//! - `broadcast` and `axis` (arithmetic and comparisons before opset 7):
//!   with `broadcast = 1` the second operand is a run of the first's dims
//!   starting at `axis` (default: its last dims, as numpy aligns them), so
//!   it is reshaped with trailing 1s and broadcast as opset 7 does; with
//!   `broadcast = 0` the shapes must be equal. Gemm's `broadcast` (of C)
//!   is what Gemm now always does.
//! - PRelu before opset 7 has one slope per channel (dim 1), where opset 7
//!   aligns a 1-D slope with the last dim.

use super::parse::{Attr, Node};
use super::{Converter, R};
use crate::ImportError;

/// The ops whose `broadcast` and `axis` attributes went in opset 7.
const BROADCAST_OPS: &[&str] =
    &["Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Less", "Greater"];

impl Converter<'_> {
    /// Converts `node` if it is written in a form opset 7 dropped; whether
    /// it did.
    pub(super) fn legacy(&mut self, node: &Node) -> R<bool> {
        let has = |name: &str| node.attrs.iter().any(|(k, _)| k == name);
        let mut dropped: Vec<&str> = Vec::new();
        if has("consumed_inputs") {
            dropped.push("consumed_inputs");
        }
        if has("is_test") && matches!(node.op.as_str(), "Dropout" | "BatchNormalization") {
            if self.attr_int(node, "is_test", 0)? == 0 {
                return Err(self.node_err(node, "is_test = 0 (training mode) is not supported"));
            }
            dropped.push("is_test");
        }
        let mut reshape = None;
        if BROADCAST_OPS.contains(&node.op.as_str()) && (has("broadcast") || has("axis")) {
            dropped.extend(["broadcast", "axis"]);
            reshape = self.legacy_operand(node)?.map(|shape| (1, shape));
        }
        if node.op == "Gemm" && has("broadcast") {
            dropped.push("broadcast");
        }
        if node.op == "PRelu" {
            let x = self.need(node, 0)?.shape().to_vec();
            let slope = self.need(node, 1)?.shape().to_vec();
            if let ([c], [_, channels, _, ..]) = (slope.as_slice(), x.as_slice()) {
                if c == channels && *c != 1 {
                    let mut per_channel = vec![*c];
                    per_channel.resize(x.len() - 1, 1);
                    reshape = Some((1, per_channel));
                }
            }
        }
        if dropped.is_empty() && reshape.is_none() {
            return Ok(false);
        }
        let modern = Node {
            attrs: node
                .attrs
                .iter()
                .filter(|(k, _)| !dropped.contains(&k.as_str()))
                .cloned()
                .collect::<Vec<(String, Attr)>>(),
            ..node.clone()
        };
        match reshape {
            Some((k, shape)) => self.with_input_reshaped(&modern, k, &shape)?,
            None => self.node(&modern)?,
        }
        Ok(true)
    }

    /// The shape the second operand of a `broadcast` / `axis` op takes so
    /// that opset 7's broadcasting aligns it as the node's opset did;
    /// `None` where it already does.
    fn legacy_operand(&mut self, node: &Node) -> R<Option<Vec<usize>>> {
        let a = self.need(node, 0)?.shape().to_vec();
        let b = self.need(node, 1)?.shape().to_vec();
        if self.attr_int(node, "broadcast", 0)? == 0 {
            if a != b {
                return Err(self.node_err(
                    node,
                    format!("broadcast is 0, and the shapes {a:?} and {b:?} differ"),
                ));
            }
            return Ok(None);
        }
        if !node.attrs.iter().any(|(k, _)| k == "axis") {
            return Ok(None);
        }
        let axis = self.attr_int(node, "axis", 0)?;
        let rank = a.len() as i64;
        let start = if axis < 0 { axis + rank } else { axis };
        if !((0..=rank).contains(&start) && start + b.len() as i64 <= rank) {
            return Err(self.not_a_run(node, &a, &b, axis));
        }
        let start = start as usize;
        if b.iter().zip(&a[start..]).any(|(&d, &ad)| d != ad && d != 1) {
            return Err(self.not_a_run(node, &a, &b, axis));
        }
        if b.is_empty() || start + b.len() == a.len() {
            return Ok(None);
        }
        let mut aligned = b;
        aligned.resize(a.len() - start, 1);
        Ok(Some(aligned))
    }

    fn not_a_run(&self, node: &Node, a: &[usize], b: &[usize], axis: i64) -> ImportError {
        self.node_err(
            node,
            format!("the second operand {b:?} is not a run of {a:?}'s dims from axis {axis}"),
        )
    }
}
