//! Static int8 quantization of an exported float graph, in QDQ form (QuantizeLinear ->
//! DequantizeLinear pairs around float operators), which ONNX Runtime fuses into its integer
//! kernels (QLinearConv, QLinearAdd, QLinearGlobalAveragePool, ...).
//!
//! - Weights of every `Conv`: int8, symmetric, one scale per output channel; the bias int32
//!   with scale `input scale x weight scale` (what the fused kernel adds). A channel's
//!   weights are rounded so that their sum stays the rounded sum of the unrounded values
//!   ([`Rounding::SumPreserving`], the default): on smooth inputs a convolution acts mostly
//!   through that sum, and the rounding errors of rounding each weight to nearest add up
//!   in it (on the 27 weights of EfficientNet-Lite0's first convolution, grey pictures, a
//!   shift of 0.36 in one channel's mean output).
//! - Activations: uint8, asymmetric, one scale per tensor, from ranges calibrated on pictures
//!   ([`calibration_graph`] exposes every tensor that gets quantized as an extra output):
//!   the graph input and every node output, except an output consumed only by `Relu`/`Clip`
//!   (the activation's output is quantized instead, so that ONNX Runtime drops the `Clip`
//!   into the quantization) and the float head: `Gemm` keeps float weights and output, so
//!   the logits stay float.

use super::proto::*;
use super::{OnnxError, Result};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// ONNX element types written here besides [`FLOAT`].
pub const INT8: i32 = 3;
pub const UINT8: i32 = 2;
pub const INT32: i32 = 6;

/// How a channel's weights, divided by its scale, become integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Each to the nearest integer.
    Nearest,
    /// Each to the nearest integer, then the fewest of them moved by one, those with the
    /// largest rounding residual, so that their sum is the nearest integer to the exact sum.
    #[default]
    SumPreserving,
}

impl Rounding {
    pub fn name(self) -> &'static str {
        match self {
            Rounding::Nearest => "nearest",
            Rounding::SumPreserving => "sum-preserving",
        }
    }

    /// `v` rounded to int8 values in `[-127, 127]`.
    fn round(self, v: &[f32]) -> Vec<i8> {
        let mut q: Vec<f32> = v.iter().map(|x| x.round().clamp(-127.0, 127.0)).collect();
        if self == Rounding::SumPreserving {
            let exact: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let have: f64 = q.iter().map(|&x| f64::from(x)).sum();
            let need = (exact.round() - have) as i64;
            let step = need.signum() as f32;
            // Residuals in the direction of the step, largest first (none moved when the
            // sum is already right).
            let mut order: Vec<usize> = (0..v.len())
                .filter(|&i| need != 0 && (q[i] + step).abs() <= 127.0)
                .collect();
            order.sort_by(|&a, &b| ((v[b] - q[b]) * step).total_cmp(&((v[a] - q[a]) * step)));
            for &i in order.iter().take(need.unsigned_abs() as usize) {
                q[i] += step;
            }
        }
        q.into_iter().map(|x| x as i8).collect()
    }
}

/// An activation's calibrated range (`min <= 0 <= max` after [`Range::widen`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

impl Range {
    /// The range of `values` joined with this one.
    pub fn widen(self, values: &[f32]) -> Range {
        values.iter().fold(self, |r, &v| Range {
            min: r.min.min(v),
            max: r.max.max(v),
        })
    }

    /// An empty range (widened by the first values; 0 is always inside).
    pub fn zero() -> Range {
        Range { min: 0.0, max: 0.0 }
    }

    /// uint8 `(scale, zero point)` covering the range.
    fn uint8(self) -> (f32, u8) {
        let (lo, hi) = (self.min.min(0.0), self.max.max(0.0));
        let scale = ((hi - lo) / 255.0).max(1e-8);
        let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
        (scale, zp)
    }
}

fn decode(model: &[u8]) -> Result<ModelProto> {
    ModelProto::decode(model).map_err(|e| OnnxError::Unsupported(format!("reading the graph: {e}")))
}

fn graph_of(m: &mut ModelProto) -> Result<&mut GraphProto> {
    m.graph
        .as_mut()
        .ok_or_else(|| OnnxError::Unsupported("the model has no graph".into()))
}

/// The tensors [`quantize`] puts through QuantizeLinear, in graph order.
fn quantized_tensors(g: &GraphProto) -> Vec<String> {
    let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let outputs: HashSet<&str> = g.output.iter().map(|o| o.name.as_str()).collect();
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            consumers
                .entry(i.as_str())
                .or_default()
                .push(n.op_type.as_str());
        }
    }
    let keep = |name: &str, op: &str| {
        let uses = consumers.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let only_activation =
            !uses.is_empty() && uses.iter().all(|u| matches!(*u, "Relu" | "Clip"));
        !inits.contains(name)
            && !outputs.contains(name)
            && !only_activation
            && !matches!(op, "Gemm" | "Identity" | "Softmax" | "Log")
            && !uses.is_empty()
    };
    let mut out: Vec<String> = (g.input.iter())
        .map(|i| i.name.clone())
        .filter(|n| keep(n, ""))
        .collect();
    for n in &g.node {
        out.extend(n.output.iter().filter(|o| keep(o, &n.op_type)).cloned());
    }
    out
}

/// The graph with every tensor that [`quantize`] quantizes added as a float output, and
/// their names in output order: run it on calibration pictures and widen each tensor's
/// [`Range`] by its values.
pub fn calibration_graph(model: &[u8]) -> Result<(Vec<u8>, Vec<String>)> {
    let mut m = decode(model)?;
    let g = graph_of(&mut m)?;
    let names = quantized_tensors(g);
    for n in &names {
        g.output.push(ValueInfoProto {
            name: n.clone(),
            r#type: Some(TypeProto {
                tensor_type: Some(TypeProtoTensor {
                    elem_type: FLOAT,
                    shape: None,
                }),
            }),
        });
    }
    Ok((m.encode_to_vec(), names))
}

fn tensor(name: String, data_type: i32, dims: &[usize], raw_data: Vec<u8>) -> TensorProto {
    TensorProto {
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type,
        name,
        raw_data,
    }
}

fn floats(t: &TensorProto) -> Vec<f32> {
    (t.raw_data.chunks_exact(4))
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn dq_node(input: [&str; 3], output: &str, axis: Option<i64>) -> NodeProto {
    NodeProto {
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: output.into(),
        op_type: "DequantizeLinear".into(),
        attribute: axis
            .map(|a| super::attr_int("axis", a))
            .into_iter()
            .collect(),
    }
}

/// A tensor quantized per output channel (axis 0): its values, scales and zero points.
struct Quantized<'a> {
    kind: i32,
    dims: &'a [usize],
    values: Vec<u8>,
    scales: &'a [f32],
    /// The zero points' bytes (one element per channel, of `kind`).
    zero: &'a [u8],
}

impl Quantized<'_> {
    /// Its initialisers (`name.q`, `name.scale`, `name.zp`) and the DequantizeLinear node
    /// that turns them back into floats; returns that node's output, `name.dq`.
    fn dequantized(
        self,
        name: &str,
        inits: &mut HashMap<String, TensorProto>,
        nodes: &mut Vec<NodeProto>,
    ) -> String {
        let (q, s, z) = (
            format!("{name}.q"),
            format!("{name}.scale"),
            format!("{name}.zp"),
        );
        let c = self.scales.len();
        for t in [
            tensor(q.clone(), self.kind, self.dims, self.values),
            tensor(s.clone(), FLOAT, &[c], f32_bytes(self.scales)),
            tensor(z.clone(), self.kind, &[c], self.zero.to_vec()),
        ] {
            inits.insert(t.name.clone(), t);
        }
        let out = format!("{name}.dq");
        nodes.push(dq_node([&q, &s, &z], &out, Some(0)));
        out
    }
}

/// The largest |bias| / bias scale written: the int32 bias, with headroom for the sums the
/// integer kernel adds to it.
const BIAS_LIMIT: f64 = (1u64 << 30) as f64;

/// One symmetric int8 scale per output channel of the weights `w` (`bias.len()` channels):
/// the channel's largest |weight| / 127, raised where needed so that the channel's bias fits
/// int32 at the bias scale `x_scale x weight scale`. A channel whose weights are all (nearly)
/// zero, as batch-norm folding leaves where the learned gain is zero, would otherwise get a
/// scale near zero, and its bias would saturate int32 and be lost (EfficientNet-Lite0 has 89
/// such channels; their constant output went to zero).
fn weight_scales(w: &[f32], bias: &[f32], x_scale: f32) -> Vec<f32> {
    let per = w.len() / bias.len().max(1);
    (w.chunks(per).zip(bias))
        .map(|(c, b)| {
            let max = c.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let floor = (b.abs() as f64 / (x_scale as f64 * BIAS_LIMIT)) as f32;
            max.max(floor).max(1e-12)
        })
        .collect()
}

/// A Conv's float weight and bias replaced by int8 / int32 initialisers and their
/// DequantizeLinear nodes (appended to `nodes`); `x_scale` is the scale of its input.
fn quantize_conv(
    node: &mut NodeProto,
    inits: &mut HashMap<String, TensorProto>,
    x_scale: f32,
    rounding: Rounding,
    nodes: &mut Vec<NodeProto>,
) -> Result<()> {
    let missing =
        |what: &str| OnnxError::Unsupported(format!("{}: no {what} initialiser", node.name));
    let w = inits
        .remove(&node.input[1])
        .ok_or_else(|| missing("weight"))?;
    let wv = floats(&w);
    let c_out = w.dims.first().copied().unwrap_or(1).max(1) as usize;
    let per = wv.len() / c_out;
    let bias = match node.input.get(2) {
        Some(name) => Some(inits.remove(name).ok_or_else(|| missing("bias"))?),
        None => None,
    };
    let bv = bias
        .as_ref()
        .map(floats)
        .unwrap_or_else(|| vec![0.0; c_out]);
    let scales = weight_scales(&wv, &bv, x_scale);
    let q: Vec<u8> = (wv.chunks(per).zip(&scales))
        .flat_map(|(c, s)| rounding.round(&c.iter().map(|v| v / s).collect::<Vec<_>>()))
        .map(|v| v as u8)
        .collect();
    let dims: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let zeros = vec![0; c_out];
    let wt = Quantized {
        kind: INT8,
        dims: &dims,
        values: q,
        scales: &scales,
        zero: &zeros,
    };
    node.input[1] = wt.dequantized(&w.name, inits, nodes);
    if let Some(b) = bias {
        let bname = b.name.clone();
        let bs: Vec<f32> = scales.iter().map(|s| s * x_scale).collect();
        let bq: Vec<u8> = (bv.iter().zip(&bs))
            .flat_map(|(v, s)| ((v / s).round() as i32).to_le_bytes())
            .collect();
        let zeros = vec![0; 4 * c_out];
        let bt = Quantized {
            kind: INT32,
            dims: &[c_out],
            values: bq,
            scales: &bs,
            zero: &zeros,
        };
        node.input[2] = bt.dequantized(&bname, inits, nodes);
    }
    Ok(())
}

/// The Conv nodes of `model` that `keep` names, to be kept in float: `stem` (the first
/// convolution), `depthwise` (every grouped one), `last` (the last one), or a node's name
/// (e.g. `conv_15`). An unknown name is an error listing what there is.
pub fn float_convs(model: &[u8], keep: &[String]) -> Result<HashSet<String>> {
    let m = decode(model)?;
    let g = m
        .graph
        .as_ref()
        .ok_or_else(|| OnnxError::Unsupported("the model has no graph".into()))?;
    let convs: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type == "Conv").collect();
    let grouped = |n: &NodeProto| n.attribute.iter().any(|a| a.name == "group" && a.i > 1);
    let mut out = HashSet::new();
    for k in keep {
        let picked: Vec<&NodeProto> = match k.as_str() {
            "stem" => convs.first().copied().into_iter().collect(),
            "last" => convs.last().copied().into_iter().collect(),
            "depthwise" => convs.iter().copied().filter(|n| grouped(n)).collect(),
            name => convs.iter().copied().filter(|n| n.name == name).collect(),
        };
        if picked.is_empty() {
            let names: Vec<&str> = convs.iter().map(|n| n.name.as_str()).collect();
            return Err(OnnxError::Unsupported(format!(
                "no convolution '{k}' to keep in float (stem, depthwise, last, or one of {})",
                names.join(", ")
            )));
        }
        out.extend(picked.into_iter().map(|n| n.name.clone()));
    }
    Ok(out)
}

/// The QDQ graph of `model` with activation `ranges` from calibration (every name
/// [`calibration_graph`] listed must have one); `metadata` is added to the graph's own. The
/// Conv nodes named in `float` keep float weights and a float output; the others' weights
/// are rounded by `rounding`.
pub fn quantize(
    model: &[u8],
    ranges: &HashMap<String, Range>,
    metadata: &[(String, String)],
    float: &HashSet<String>,
    rounding: Rounding,
) -> Result<Vec<u8>> {
    let mut m = decode(model)?;
    m.metadata_props
        .extend(metadata.iter().map(|(key, value)| StringStringEntryProto {
            key: key.clone(),
            value: value.clone(),
        }));
    let g = graph_of(&mut m)?;
    let float_outputs: HashSet<&str> = (g.node.iter())
        .filter(|n| float.contains(&n.name))
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let names: Vec<String> = (quantized_tensors(g).into_iter())
        .filter(|t| !float_outputs.contains(t.as_str()))
        .collect();
    let mut qparams: HashMap<String, (f32, u8)> = HashMap::new();
    for n in &names {
        let r = ranges
            .get(n)
            .ok_or_else(|| OnnxError::Unsupported(format!("no calibrated range for {n}")))?;
        qparams.insert(n.clone(), r.uint8());
    }
    let mut inits: HashMap<String, TensorProto> = (g.initializer.drain(..))
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut order: Vec<String> = Vec::new();
    let mut nodes: Vec<NodeProto> = Vec::new();
    // Q -> DQ of tensor `t`, right after it is made; consumers read `t.dq`.
    let qdq = |t: &str, inits: &mut HashMap<String, TensorProto>, nodes: &mut Vec<NodeProto>| {
        let (scale, zp) = qparams[t];
        let (s, z) = (format!("{t}.scale"), format!("{t}.zp"));
        inits.insert(
            s.clone(),
            tensor(s.clone(), FLOAT, &[], f32_bytes(&[scale])),
        );
        inits.insert(z.clone(), tensor(z.clone(), UINT8, &[], vec![zp]));
        nodes.push(NodeProto {
            input: vec![t.into(), s.clone(), z.clone()],
            output: vec![format!("{t}.q")],
            name: format!("{t}.q"),
            op_type: "QuantizeLinear".into(),
            attribute: vec![],
        });
        nodes.push(dq_node(
            [&format!("{t}.q"), &s, &z],
            &format!("{t}.dq"),
            None,
        ));
    };
    for i in &g.input {
        if qparams.contains_key(&i.name) {
            qdq(&i.name, &mut inits, &mut nodes);
        }
    }
    for mut node in g.node.drain(..) {
        // A float convolution reads its input unquantized: with a DequantizeLinear before it
        // (and a QuantizeLinear after), ONNX Runtime's WeightBiasQuantization would quantize
        // its float weights itself, per tensor, which ruins depthwise layers.
        let keep_float = float.contains(&node.name);
        for input in node.input.iter_mut() {
            if qparams.contains_key(input.as_str()) && !keep_float {
                *input = format!("{input}.dq");
            }
        }
        if node.op_type == "Conv" && !float.contains(&node.name) {
            let x = node.input[0].trim_end_matches(".dq").to_string();
            if let Some(&(x_scale, _)) = qparams.get(&x) {
                quantize_conv(&mut node, &mut inits, x_scale, rounding, &mut nodes)?;
            }
        }
        let made: Vec<String> = node.output.clone();
        nodes.push(node);
        for o in made.iter().filter(|o| qparams.contains_key(o.as_str())) {
            qdq(o, &mut inits, &mut nodes);
        }
    }
    order.extend(inits.keys().cloned());
    order.sort();
    g.initializer = order.into_iter().filter_map(|k| inits.remove(&k)).collect();
    g.node = nodes;
    Ok(m.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn uint8_parameters_cover_the_range_with_zero_exact() {
        let (s, z) = Range {
            min: -1.0,
            max: 3.0,
        }
        .uint8();
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(z, 64);
        let (s, z) = Range::zero().widen(&[0.5, 6.0]).uint8();
        assert_eq!(z, 0);
        assert!((s * 255.0 - 6.0).abs() < 1e-5);
    }

    #[test]
    fn sum_preserving_rounding_keeps_a_channels_sum_and_moves_no_weight_further_than_one() {
        let v = [0.4f32; 10];
        assert_eq!(Rounding::Nearest.round(&v), vec![0; 10]);
        let q = Rounding::SumPreserving.round(&v);
        assert_eq!(q.iter().map(|&x| i32::from(x)).sum::<i32>(), 4);
        // Moved are the values rounded furthest from them, in either direction.
        let v = [1.45f32, -2.3, 0.49, 7.0, 0.3, 126.9, -126.6];
        let q = Rounding::SumPreserving.round(&v);
        let exact: f32 = v.iter().sum();
        assert_eq!(
            q.iter().map(|&x| i32::from(x)).sum::<i32>(),
            exact.round() as i32
        );
        for (a, b) in v.iter().zip(&q) {
            assert!((a - f32::from(*b)).abs() < 1.0, "{a} rounded to {b}");
        }
        assert_eq!(q, vec![1, -2, 1, 7, 0, 127, -127]);
        assert_eq!(
            Rounding::SumPreserving.round(&[-0.45, -0.4, 0.1]),
            vec![-1, 0, 0]
        );
        // Saturated values are not pushed past the int8 range.
        let q = Rounding::SumPreserving.round(&[127.4, 127.4, 127.4]);
        assert_eq!(q, vec![127, 127, 127]);
    }

    #[test]
    fn a_dead_channel_keeps_its_bias_within_int32() {
        // Two output channels of 3 weights: a live one, and one that batch-norm folding
        // zeroed (gain 0), whose output is its bias alone.
        let w = [0.5, -1.27, 0.1, 0.0, 1e-9, -2e-9];
        let bias = [0.3, 7.07];
        let x_scale = 2.0 / 255.0;
        let s = weight_scales(&w, &bias, x_scale);
        assert!(
            (s[0] - 1.27 / 127.0).abs() < 1e-9,
            "a live channel keeps max/127"
        );
        for (b, ws) in bias.iter().zip(&s) {
            let q = (b / (ws * x_scale)).round();
            assert!(
                q.abs() <= BIAS_LIMIT as f32,
                "bias {b} saturates int32: {q}"
            );
            let back = (q as i32) as f32 * ws * x_scale;
            assert!(
                (back - b).abs() < 1e-5 * b.abs(),
                "bias {b} read back as {back}"
            );
        }
    }
}
