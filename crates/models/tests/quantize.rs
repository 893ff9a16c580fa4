//! The int8 pass (`artemis_models::onnx::quantize`) on a real network's exported graph.
#![allow(clippy::unwrap_used)]

use artemis_models::onnx::proto::{FLOAT, ModelProto, NodeProto, TensorProto};
use artemis_models::onnx::quantize::{INT8, INT32, Range, UINT8, calibration_graph, quantize};
use artemis_models::{Architecture, ModelSpec, OnnxGraph};
use burn::module::Module;
use burn::prelude::Device;
use prost::Message;
use std::collections::HashMap;

/// Every Conv reads int8 weights and an int32 bias through DequantizeLinear, every
/// calibrated tensor goes through one QuantizeLinear, and the head stays float.
#[test]
fn every_convolution_reads_int8_weights_and_the_head_stays_float() {
    let spec = ModelSpec::new(Architecture::BaselineReluBn, 3, (96, 96));
    let net = spec.init(&Device::flex()).unwrap().valid();
    let float = net.to_onnx(&spec, OnnxGraph::Logits, &[]).unwrap();
    let (calib, names) = calibration_graph(&float).unwrap();
    let g = ModelProto::decode(&calib[..]).unwrap().graph.unwrap();
    assert!(names.contains(&"image".to_string()));
    assert_eq!(g.output.len(), 1 + names.len());
    let ranges = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                Range {
                    min: -1.0,
                    max: 2.0,
                },
            )
        })
        .collect();
    let q = ModelProto::decode(&quantize(&float, &ranges, &[]).unwrap()[..]).unwrap();
    let g = q.graph.unwrap();
    let init: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let made_by: HashMap<&str, &NodeProto> = (g.node.iter())
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    let convs: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type == "Conv").collect();
    assert!(convs.len() >= 4);
    for c in convs {
        for (i, kind) in [(0, UINT8), (1, INT8), (2, INT32)] {
            let dq = made_by[c.input[i].as_str()];
            assert_eq!(dq.op_type, "DequantizeLinear", "{} input {i}", c.name);
            let stored = match init.get(dq.input[0].as_str()) {
                Some(t) => t.data_type,
                None => UINT8, // an activation: the output of a QuantizeLinear
            };
            assert_eq!(stored, kind, "{} input {i}", c.name);
        }
    }
    let quantized = g
        .node
        .iter()
        .filter(|n| n.op_type == "QuantizeLinear")
        .count();
    assert_eq!(quantized, names.len());
    let gemm = g.node.iter().find(|n| n.op_type == "Gemm").unwrap();
    assert_eq!(init[gemm.input[1].as_str()].data_type, FLOAT);
}
