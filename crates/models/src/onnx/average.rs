//! One ONNX graph that averages several networks' calibrated probabilities: an ensemble's
//! export. Each member's logits graph is copied in under a prefix of its own (`m0.`, `m1.`,
//! ...), fed its input (through a per-channel affine map when the member scales pixels
//! differently), divided by its temperature and passed through a softmax; the mean of the
//! softmaxes, floored at 1e-30, is logged.
//!
//! Members that make their pictures differently (another framing or size) read another input
//! of the graph: input `g` is named by [`input_name`] (`image`, `image_1`, ...), and the caller
//! prepares one tensor per input.

use super::proto::ModelProto;
use super::{Dim, Graph, INPUT, OnnxError, Result, Value, attr_int};
use prost::Message;

/// One member of an averaged graph.
pub struct Member<'a> {
    /// The member's logits graph (output `logits [batch, classes]` from input [`INPUT`]).
    pub model: &'a [u8],
    /// The temperature dividing its logits (1: the raw softmax).
    pub temperature: f32,
    /// Per channel, `x * scale + shift` turns the graph's input into the member's.
    pub scale: [f32; 3],
    pub shift: [f32; 3],
    /// Which of the graph's inputs the member reads (0: [`INPUT`]).
    pub input: usize,
}

/// The name of the averaged graph's input `g`: [`INPUT`], then `image_1`, `image_2`, ...
pub fn input_name(g: usize) -> String {
    match g {
        0 => INPUT.to_string(),
        g => format!("{INPUT}_{g}"),
    }
}

/// The averaged graph: input `g` ([`input_name`]) `[batch, 3, h, w]` (`inputs[g] = (h, w)`),
/// scaled as the first member that reads it expects; output `logits [batch, classes] =
/// ln(mean_k softmax(logits_k / T_k))`, whose softmax at temperature 1 is the mean of the
/// members' calibrated probabilities.
pub fn average(
    members: &[Member],
    inputs: &[(usize, usize)],
    classes: usize,
    doc: &str,
    metadata: &[(String, String)],
) -> Result<Vec<u8>> {
    let mut g = Graph::default();
    let mut probs = Vec::with_capacity(members.len());
    for (k, m) in members.iter().enumerate() {
        let prefix = format!("m{k}.");
        let x = g.member_input(&prefix, m);
        let z = g.append_model(m.model, &prefix, &x)?;
        let t = g.constant(&format!("{prefix}temperature"), &[1], &[m.temperature]);
        let z = g.node("Div", &[&z.0, &t], vec![]);
        probs.push(g.node("Softmax", &[&z.0], vec![attr_int("axis", 1)]));
    }
    let refs: Vec<&str> = probs.iter().map(|p| p.0.as_str()).collect();
    let sum = g.node("Sum", &refs, vec![]);
    let w = g.constant("mean_weight", &[1], &[1.0 / members.len().max(1) as f32]);
    let mean = g.node("Mul", &[&sum.0, &w], vec![]);
    let floor = g.constant("floor", &[1], &[1e-30]);
    let mean = g.node("Max", &[&mean.0, &floor], vec![]);
    let logits = g.node("Log", &[&mean.0], vec![]);
    g.output("logits", &logits, &[Dim::Batch, Dim::Fixed(classes)]);
    if let Some(m) = members.iter().find(|m| m.input >= inputs.len()) {
        return Err(OnnxError::Unsupported(format!(
            "a member reads input {} of {}",
            m.input,
            inputs.len()
        )));
    }
    let names: Vec<(String, (usize, usize))> = (inputs.iter().enumerate())
        .map(|(g, &hw)| (input_name(g), hw))
        .collect();
    Ok(g.finish_inputs(&names, doc, metadata))
}

impl Graph {
    /// The member's input: the graph's, or its per-channel affine map when the member scales
    /// pixels another way.
    fn member_input(&mut self, prefix: &str, m: &Member) -> Value {
        let input = Value(input_name(m.input));
        if m.scale == [1.0; 3] && m.shift == [0.0; 3] {
            return input;
        }
        let scale = self.constant(&format!("{prefix}input_scale"), &[1, 3, 1, 1], &m.scale);
        let shift = self.constant(&format!("{prefix}input_shift"), &[1, 3, 1, 1], &m.shift);
        let x = self.node("Mul", &[&input.0, &scale], vec![]);
        self.node("Add", &[&x.0, &shift], vec![])
    }

    /// Copies the nodes and weights of the graph in `bytes` under `prefix`, its input replaced
    /// by `input`; returns its `logits` output.
    fn append_model(&mut self, bytes: &[u8], prefix: &str, input: &Value) -> Result<Value> {
        let bad = |why: String| OnnxError::Unsupported(format!("member graph {prefix}: {why}"));
        let model = ModelProto::decode(bytes).map_err(|e| bad(e.to_string()))?;
        let graph = model.graph.ok_or_else(|| bad("no graph".into()))?;
        let rename = |n: &str| match n {
            "" => String::new(),
            INPUT => input.0.clone(),
            n => format!("{prefix}{n}"),
        };
        for mut t in graph.initializer {
            t.name = rename(&t.name);
            self.initializers.push(t);
        }
        for mut n in graph.node {
            n.input = n.input.iter().map(|s| rename(s)).collect();
            n.output = n.output.iter().map(|s| rename(s)).collect();
            n.name = format!("{prefix}{}", n.name);
            self.nodes.push(n);
        }
        (graph.output.iter())
            .find(|o| o.name == "logits")
            .map(|o| Value(rename(&o.name)))
            .ok_or_else(|| bad("no `logits` output".into()))
    }
}
