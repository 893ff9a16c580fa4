//! The int8 pass (`artemis_models::onnx::quantize`) on a real network's exported graph.
#![allow(clippy::unwrap_used)]

use artemis_models::onnx::proto::{FLOAT, GraphProto, ModelProto, NodeProto, TensorProto};
use artemis_models::onnx::quantize::{INT8, INT32, Range, UINT8, calibration_graph, quantize};
use artemis_models::{Architecture, ModelSpec, OnnxGraph};
use burn::module::Module;
use burn::prelude::Device;
use prost::Message;
use std::collections::HashMap;

/// A graph's initialisers by name, and each tensor's producing node.
fn index(g: &GraphProto) -> (HashMap<&str, &TensorProto>, HashMap<&str, &NodeProto>) {
    let init = g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    let made_by = (g.node.iter())
        .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
        .collect();
    (init, made_by)
}

/// One calibrated range, `min..max`, for every tensor in `names`.
fn same_range(names: &[String], min: f32, max: f32) -> HashMap<String, Range> {
    names
        .iter()
        .map(|n| (n.clone(), Range { min, max }))
        .collect()
}

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
    let ranges = same_range(&names, -1.0, 2.0);
    let q = ModelProto::decode(
        &quantize(
            &float,
            &ranges,
            &[],
            &Default::default(),
            Default::default(),
        )
        .unwrap()[..],
    )
    .unwrap();
    let g = q.graph.unwrap();
    let (init, made_by) = index(&g);
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

/// Convolutions kept in float (`float_convs`: the stem and every depthwise one of
/// MobileNetV2) keep float weights and read their input unquantized (no DequantizeLinear
/// before them: ONNX Runtime's WeightBiasQuantization would otherwise quantize their weights
/// itself, per tensor, which took a depthwise-in-float EfficientNet-Lite0 from 100% to 90%
/// agreement with its float graph); their outputs get no QuantizeLinear; the others stay int8.
#[test]
fn kept_convolutions_stay_float_with_float_inputs() {
    use artemis_models::onnx::quantize::float_convs;
    let spec = ModelSpec::new(Architecture::MobileNetV2, 3, (64, 64));
    let net = spec.init(&Device::flex()).unwrap().valid();
    let float = net.to_onnx(&spec, OnnxGraph::Logits, &[]).unwrap();
    let keep = ["stem".to_string(), "depthwise".to_string()];
    let kept = float_convs(&float, &keep).unwrap();
    assert_eq!(
        kept.len(),
        1 + 17,
        "the stem and MobileNetV2's 17 depthwise convolutions"
    );
    let err = float_convs(&float, &["conv_nope".to_string()]).unwrap_err();
    assert!(err.to_string().contains("conv_nope"), "{err}");
    let (_, names) = calibration_graph(&float).unwrap();
    let ranges = same_range(&names, -1.0, 6.0);
    let q =
        ModelProto::decode(&quantize(&float, &ranges, &[], &kept, Default::default()).unwrap()[..])
            .unwrap();
    let g = q.graph.unwrap();
    let (init, made_by) = index(&g);
    let quantized: Vec<&str> = (g.node.iter())
        .filter(|n| n.op_type == "QuantizeLinear")
        .map(|n| n.input[0].as_str())
        .collect();
    let convs: Vec<&NodeProto> = g.node.iter().filter(|n| n.op_type == "Conv").collect();
    for c in &convs {
        let weights_dq = made_by.get(c.input[1].as_str()).map(|n| n.op_type.as_str());
        let input_dq = made_by.get(c.input[0].as_str()).map(|n| n.op_type.as_str());
        if kept.contains(&c.name) {
            assert_eq!(init[c.input[1].as_str()].data_type, FLOAT, "{}", c.name);
            assert_ne!(
                input_dq,
                Some("DequantizeLinear"),
                "{} reads a dequantized input",
                c.name
            );
            assert!(!quantized.contains(&c.output[0].as_str()), "{}", c.name);
        } else {
            assert_eq!(weights_dq, Some("DequantizeLinear"), "{}", c.name);
            assert_eq!(input_dq, Some("DequantizeLinear"), "{}", c.name);
        }
    }
}
