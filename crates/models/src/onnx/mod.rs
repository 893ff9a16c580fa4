//! ONNX export: a small graph builder over burn modules, with BatchNorm folded into the
//! convolution before it.
//!
//! Every architecture describes its own graph next to its `forward` (`onnx_*` methods in its
//! file), with the operators below; [`crate::Network::to_onnx`] puts the pieces together.
//! Graphs are opset 17 (IR version 8), float32, with a free batch dimension and a fixed
//! spatial input size (the run's).
//!
//! Folding (per output channel `o`, in f64, then rounded to f32 once):
//! `s = gamma / sqrt(running_var + eps)`, `W'[o] = W[o] * s[o]`,
//! `b'[o] = (b[o] - running_mean[o]) * s[o] + beta[o]` (`b = 0` for a convolution without
//! bias). This is inference-mode BatchNorm exactly; burn and ONNX Runtime then differ only in
//! float rounding.

pub mod average;
pub mod proto;
pub mod quantize;

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::prelude::*;
use prost::Message;
use proto::*;

/// Opset written (ONNX 1.12, 2022; every operator used here is unchanged since).
pub const OPSET: i64 = 17;
/// IR version matching [`OPSET`].
pub const IR_VERSION: i64 = 8;
/// Name of the image input of every exported graph.
pub const INPUT: &str = "image";

/// Why a graph could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("reading tensor {name}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("cannot export: {0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, OnnxError>;

/// A tensor in the graph under construction (its name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value(pub String);

/// A graph being built: nodes in execution order, initialisers (weights), a name counter.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    outputs: Vec<ValueInfoProto>,
    next: usize,
}

fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: attr::INT,
        ..Default::default()
    }
}

fn attr_ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.iter().map(|&v| v as i64).collect(),
        r#type: attr::INTS,
        ..Default::default()
    }
}

fn attr_str(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        s: s.as_bytes().to_vec(),
        r#type: attr::STRING,
        ..Default::default()
    }
}

/// Reads a float tensor of any rank as f32 values.
pub fn values<const D: usize>(t: Tensor<D>, name: &str) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| OnnxError::Tensor {
            name: name.into(),
            reason: format!("{e:?}"),
        })
}

fn param<const D: usize>(p: &Param<Tensor<D>>, name: &str) -> Result<Vec<f32>> {
    values(p.val(), name)
}

/// ONNX `pads` (`[top, left, bottom, right]`) or `auto_pad` for a burn padding.
fn padding_attrs(p: &PaddingConfig2d) -> Vec<AttributeProto> {
    match p {
        PaddingConfig2d::Valid => vec![attr_ints("pads", &[0, 0, 0, 0])],
        // burn puts the odd pixel of "same" padding at the end: ONNX's SAME_UPPER.
        PaddingConfig2d::Same => vec![attr_str("auto_pad", "SAME_UPPER")],
        PaddingConfig2d::Explicit(top, left, bottom, right) => {
            vec![attr_ints("pads", &[*top, *left, *bottom, *right])]
        }
    }
}

fn tensor_type(dims: &[Dim]) -> TypeProto {
    TypeProto {
        tensor_type: Some(TypeProtoTensor {
            elem_type: FLOAT,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| match d {
                        Dim::Batch => Dimension {
                            dim_value: None,
                            dim_param: Some("batch".into()),
                        },
                        Dim::Fixed(n) => Dimension {
                            dim_value: Some(*n as i64),
                            dim_param: None,
                        },
                    })
                    .collect(),
            }),
        }),
    }
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The free batch dimension.
    Batch,
    Fixed(usize),
}

impl Graph {
    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    /// Adds a node with one output and returns it.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> Value {
        let out = self.fresh(&op.to_ascii_lowercase());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute: attrs,
        });
        Value(out)
    }

    /// Adds a float initialiser.
    pub fn constant(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let name = self.fresh(name);
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    /// Convolution, with the BatchNorm that follows it folded in when given.
    ///
    /// # Shapes
    /// `[b, c_in, h, w]` -> `[b, c_out, h', w']`
    pub fn conv(
        &mut self,
        name: &str,
        x: &Value,
        conv: &Conv2d,
        bn: Option<&BatchNorm>,
    ) -> Result<Value> {
        let dims = conv.weight.val().dims();
        let mut w = param(&conv.weight, &format!("{name}.weight"))?;
        let c_out = dims[0];
        let mut b = match &conv.bias {
            Some(p) => param(p, &format!("{name}.bias"))?,
            None => vec![0.0; c_out],
        };
        if let Some(bn) = bn {
            let gamma = param(&bn.gamma, &format!("{name}.bn.gamma"))?;
            let beta = param(&bn.beta, &format!("{name}.bn.beta"))?;
            let mean = values(bn.running_mean.value(), &format!("{name}.bn.running_mean"))?;
            let var = values(bn.running_var.value(), &format!("{name}.bn.running_var"))?;
            if [gamma.len(), beta.len(), mean.len(), var.len()] != [c_out; 4] {
                return Err(OnnxError::Unsupported(format!(
                    "{name}: BatchNorm over {} channels after a convolution with {c_out}",
                    gamma.len()
                )));
            }
            let per_out = w.len() / c_out;
            for o in 0..c_out {
                let s = f64::from(gamma[o]) / (f64::from(var[o]) + bn.epsilon).sqrt();
                for v in &mut w[o * per_out..(o + 1) * per_out] {
                    *v = (f64::from(*v) * s) as f32;
                }
                b[o] = ((f64::from(b[o]) - f64::from(mean[o])) * s + f64::from(beta[o])) as f32;
            }
        }
        let wn = self.constant(&format!("{name}.weight"), &dims, &w);
        let bname = self.constant(&format!("{name}.bias"), &[c_out], &b);
        let mut attrs = vec![
            attr_ints("kernel_shape", &conv.kernel_size),
            attr_ints("strides", &conv.stride),
            attr_ints("dilations", &conv.dilation),
            attr_int("group", conv.groups as i64),
        ];
        attrs.extend(padding_attrs(&conv.padding));
        Ok(self.node("Conv", &[&x.0, &wn, &bname], attrs))
    }

    pub fn relu(&mut self, x: &Value) -> Value {
        self.node("Relu", &[&x.0], vec![])
    }

    /// `min(max(x, 0), 6)` (`Clip` with its bounds as inputs, opset 11+).
    pub fn relu6(&mut self, x: &Value) -> Value {
        let lo = self.constant("zero", &[], &[0.0]);
        let hi = self.constant("six", &[], &[6.0]);
        self.node("Clip", &[&x.0, &lo, &hi], vec![])
    }

    pub fn sigmoid(&mut self, x: &Value) -> Value {
        self.node("Sigmoid", &[&x.0], vec![])
    }

    pub fn add(&mut self, a: &Value, b: &Value) -> Value {
        self.node("Add", &[&a.0, &b.0], vec![])
    }

    /// Concatenation along the channels. `[b, c_i, h, w]...` -> `[b, sum c_i, h, w]`.
    pub fn concat(&mut self, xs: &[Value]) -> Value {
        let names: Vec<&str> = xs.iter().map(|v| v.0.as_str()).collect();
        self.node("Concat", &names, vec![attr_int("axis", 1)])
    }

    pub fn max_pool(&mut self, x: &Value, p: &MaxPool2d) -> Value {
        let mut attrs = vec![
            attr_ints("kernel_shape", &p.kernel_size),
            attr_ints("strides", &p.stride),
            attr_ints("dilations", &p.dilation),
            attr_int("ceil_mode", i64::from(p.ceil_mode)),
        ];
        attrs.extend(padding_attrs(&p.padding));
        self.node("MaxPool", &[&x.0], attrs)
    }

    pub fn avg_pool(&mut self, x: &Value, p: &AvgPool2d) -> Value {
        let mut attrs = vec![
            attr_ints("kernel_shape", &p.kernel_size),
            attr_ints("strides", &p.stride),
            attr_int("ceil_mode", i64::from(p.ceil_mode)),
            attr_int("count_include_pad", i64::from(p.count_include_pad)),
        ];
        attrs.extend(padding_attrs(&p.padding));
        self.node("AveragePool", &[&x.0], attrs)
    }

    /// `[b, c, h, w]` -> `[b, c, 1, 1]`.
    pub fn global_avg_pool(&mut self, x: &Value) -> Value {
        self.node("GlobalAveragePool", &[&x.0], vec![])
    }

    /// `[b, c, h, w]` -> `[b, c * h * w]` (row-major, as burn's `flatten(1, 3)`).
    pub fn flatten(&mut self, x: &Value) -> Value {
        self.node("Flatten", &[&x.0], vec![attr_int("axis", 1)])
    }

    /// `x W + b` with burn's `[d_in, d_out]` weight (`Gemm`, no transposes).
    ///
    /// # Shapes
    /// `[b, d_in]` -> `[b, d_out]`
    pub fn linear(&mut self, name: &str, x: &Value, l: &Linear) -> Result<Value> {
        let dims = l.weight.val().dims();
        let w = param(&l.weight, &format!("{name}.weight"))?;
        let wn = self.constant(&format!("{name}.weight"), &dims, &w);
        let b = match &l.bias {
            Some(p) => param(p, &format!("{name}.bias"))?,
            None => vec![0.0; dims[1]],
        };
        let bn = self.constant(&format!("{name}.bias"), &[dims[1]], &b);
        Ok(self.node("Gemm", &[&x.0, &wn, &bn], vec![]))
    }

    /// Names `x` as a graph output called `name` (an `Identity` node, so a value can be both
    /// an output and an input of later nodes).
    pub fn output(&mut self, name: &str, x: &Value, dims: &[Dim]) {
        self.nodes.push(NodeProto {
            input: vec![x.0.clone()],
            output: vec![name.into()],
            name: format!("output_{name}"),
            op_type: "Identity".into(),
            attribute: vec![],
        });
        self.outputs.push(ValueInfoProto {
            name: name.into(),
            r#type: Some(tensor_type(dims)),
        });
    }

    /// The finished model: input [`INPUT`] `[batch, 3, height, width]`, the outputs named so
    /// far, and `metadata` as the model's metadata properties.
    pub fn finish(
        self,
        input: (usize, usize),
        doc: &str,
        metadata: &[(String, String)],
    ) -> Vec<u8> {
        self.finish_inputs(&[(INPUT.to_string(), input)], doc, metadata)
    }

    /// [`Self::finish`] with several inputs, each `(name, (height, width))`.
    pub fn finish_inputs(
        self,
        inputs: &[(String, (usize, usize))],
        doc: &str,
        metadata: &[(String, String)],
    ) -> Vec<u8> {
        let input = (inputs.iter())
            .map(|(name, (h, w))| ValueInfoProto {
                name: name.clone(),
                r#type: Some(tensor_type(&[
                    Dim::Batch,
                    Dim::Fixed(3),
                    Dim::Fixed(*h),
                    Dim::Fixed(*w),
                ])),
            })
            .collect();
        let graph = GraphProto {
            node: self.nodes,
            name: "artemis".into(),
            initializer: self.initializers,
            doc_string: doc.into(),
            input,
            output: self.outputs,
        };
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "artemis".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc.into(),
            graph: Some(graph),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: metadata
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
        }
        .encode_to_vec()
    }

    /// The input value.
    pub fn input(&self) -> Value {
        Value(INPUT.into())
    }

    /// Number of nodes so far (tests).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Nodes of one operator type (tests: no BatchNormalization survives folding).
    pub fn count(&self, op: &str) -> usize {
        self.nodes.iter().filter(|n| n.op_type == op).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::BatchNormConfig;
    use burn::nn::conv::Conv2dConfig;

    #[test]
    fn folding_reproduces_inference_batchnorm() {
        // A 1x1 convolution of one channel, then BatchNorm: the folded weight and bias are the
        // closed form of the module docs.
        let d = Device::flex();
        let mut conv = Conv2dConfig::new([1, 1], [1, 1]).with_bias(true).init(&d);
        conv.weight = Param::from_tensor(Tensor::from_data([[[[2.0f32]]]], &d));
        conv.bias = Some(Param::from_tensor(Tensor::from_data([0.5f32], &d)));
        let mut bn = BatchNormConfig::new(1).with_epsilon(0.25).init(&d);
        bn.gamma = Param::from_tensor(Tensor::from_data([3.0f32], &d));
        bn.beta = Param::from_tensor(Tensor::from_data([1.0f32], &d));
        bn.running_mean = burn::module::RunningState::new(Tensor::from_data([1.5f32], &d));
        bn.running_var = burn::module::RunningState::new(Tensor::from_data([4.0f32], &d));
        let mut g = Graph::default();
        let x = g.input();
        g.conv("c", &x, &conv, Some(&bn)).unwrap();
        // s = 3 / sqrt(4.25); W' = 2 s; b' = (0.5 - 1.5) s + 1.
        let s = 3.0 / 4.25f64.sqrt();
        let w = f32::from_le_bytes(g.initializers[0].raw_data[..4].try_into().unwrap());
        let b = f32::from_le_bytes(g.initializers[1].raw_data[..4].try_into().unwrap());
        assert!((f64::from(w) - 2.0 * s).abs() < 1e-6);
        assert!((f64::from(b) - (1.0 - s)).abs() < 1e-6);
        // And burn's own conv + BatchNorm on an input gives x W' + b'.
        let xin = Tensor::<4>::from_data([[[[0.75f32]]]], &d);
        let y = values(bn.forward(conv.forward(xin)), "y").unwrap()[0];
        assert!((y - (0.75 * w + b)).abs() < 1e-6, "{y}");
        assert_eq!(g.count("Conv"), 1);
        assert_eq!(g.count("BatchNormalization"), 0);
    }

    #[test]
    fn a_model_decodes_with_its_metadata() {
        let mut g = Graph::default();
        let x = g.input();
        let r = g.relu(&x);
        g.output(
            "y",
            &r,
            &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4), Dim::Fixed(5)],
        );
        let bytes = g.finish((4, 5), "doc", &[("k".into(), "v".into())]);
        let m = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(m.opset_import[0].version, OPSET);
        assert_eq!(m.metadata_props[0].key, "k");
        let graph = m.graph.unwrap();
        assert_eq!(graph.input[0].name, INPUT);
        assert_eq!(graph.output[0].name, "y");
        assert_eq!(graph.node.len(), 2);
    }
}
