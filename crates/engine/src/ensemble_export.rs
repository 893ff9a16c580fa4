//! `artemis export` of an ensemble: one ONNX graph that averages the members' calibrated
//! probabilities (`artemis_models::onnx::average`), written as `<ensemble>/export/model.onnx`
//! with a record of the members' weights and temperatures it was made from, so a member
//! retrained or recalibrated since makes it stale (refused, the members averaged instead).

use crate::error::{EngineError, Result};
use crate::infer::Classifier;
use crate::onnx::{
    Backend, EXPORT_DIR, EXPORT_RECORD, EngineOptions, ExportRecord, INT8_FILE, Int8Record,
    MODEL_FILE, OnnxModel, random_images, run_metadata,
};
use crate::quantize::{QuantizeConfig, Quantized};
use crate::run::Run;
use artemis_data::transform::Scaling;
use artemis_models::OnnxGraph;
pub use artemis_models::onnx::average::input_name;
use artemis_models::onnx::average::{Member, average};
use std::path::PathBuf;

/// What [`export_ensemble`] wrote.
#[derive(Debug)]
pub struct EnsembleExport {
    pub model: PathBuf,
    pub bytes: u64,
    pub members: usize,
    /// Largest |probability difference| between ONNX Runtime and the members averaged in
    /// burn on the seeded random inputs (`None`: not checked).
    pub parity: Option<f32>,
    /// The int8 graph, when asked for.
    pub int8: Option<Quantized>,
}

/// Per channel, `x * scale + shift` turns input scaled by `from` into input scaled by `to`
/// (both are affine in the 8-bit value).
fn affine(from: Scaling, to: Scaling) -> ([f32; 3], [f32; 3]) {
    let (mut scale, mut shift) = ([1.0; 3], [0.0; 3]);
    for c in 0..3 {
        let (b0, a0) = (from.value(c, 0), from.value(c, 1) - from.value(c, 0));
        let (bk, ak) = (to.value(c, 0), to.value(c, 1) - to.value(c, 0));
        scale[c] = ak / a0;
        shift[c] = bk - ak * b0 / a0;
    }
    (scale, shift)
}

/// Writes the ensemble's averaging graph and checks it against burn on `check` seeded random
/// pictures when ONNX Runtime loads (`check` 0: not checked). With `int8`, also its int8
/// graph ([`quantize_members`]).
pub fn export_ensemble(
    run: &Run,
    check: usize,
    int8: Option<&QuantizeConfig>,
) -> Result<EnsembleExport> {
    let burn = EngineOptions {
        backend: Backend::Burn,
        ..EngineOptions::default()
    };
    if let Some(why) = crate::ensemble::per_member_input(&run.dir)? {
        return Err(EngineError::Config(format!(
            "no single graph: {why}; export the members instead"
        )));
    }
    let clf = Classifier::open_with(run.clone(), burn)?;
    let bytes = ensemble_graph(&clf)?;
    let dir = run.path(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let model = dir.join(MODEL_FILE);
    artemis_data::fsutil::write_atomic(&model, &bytes)?;
    let hash = artemis_data::hash::content_hash;
    let mut record = ExportRecord {
        checkpoint_blake3: clf.export_key(),
        files: [(MODEL_FILE.to_string(), hash(&bytes))].into(),
        int8: None,
    };
    let int8 = match int8 {
        Some(cfg) => {
            let (graph, settings) = quantize_members(&clf, cfg)?;
            let path = dir.join(INT8_FILE);
            artemis_data::fsutil::write_atomic(&path, &graph)?;
            record.files.insert(INT8_FILE.into(), hash(&graph));
            record.int8 = Some(settings.clone());
            Some(Quantized {
                path,
                graph,
                float_bytes: bytes.len() as u64,
                settings,
            })
        }
        None => None,
    };
    crate::run::write_json(&dir.join(EXPORT_RECORD), &record)?;
    let parity = match (check, crate::onnx::runtime()) {
        (0, _) | (_, Err(_)) => None,
        _ => Some(parity(&clf, &bytes, check)?),
    };
    Ok(EnsembleExport {
        model,
        bytes: bytes.len() as u64,
        members: clf.members.len(),
        parity,
        int8,
    })
}

/// The in-browser page's int8 graph of an ensemble whose members prepare their pictures
/// differently: the members' current int8 graphs (each made by `artemis export --quantize
/// int8` of that member) averaged with an input per way of making the picture
/// (`Classifier::picture_groups`), written as the ensemble's `export/model-int8.onnx` with its record.
/// artemis itself runs each member's own graph; only the page reads this one.
pub fn write_page_int8(run: &Run) -> Result<Quantized> {
    let burn = EngineOptions {
        backend: Backend::Burn,
        ..EngineOptions::default()
    };
    let clf = Classifier::open_with(run.clone(), burn)?;
    let (mut graphs, mut float_bytes, mut settings) = (Vec::new(), 0, None);
    for m in &clf.members {
        let precision = crate::onnx::Precision::Int8;
        let graph =
            crate::onnx::verified_export(&m.run, precision, &m.weights_hash)?.map_err(|_| {
                EngineError::Config(format!(
                    "member {} has no current int8 graph (artemis export --run {} --quantize \
                     int8)",
                    m.run.dir.display(),
                    run.dir.display()
                ))
            })?;
        let record: ExportRecord =
            crate::run::read_json(&m.run.path(EXPORT_DIR).join(EXPORT_RECORD))?;
        let float = m.run.path(EXPORT_DIR).join(MODEL_FILE);
        float_bytes += std::fs::metadata(&float)
            .map_err(|e| EngineError::io(&float, e))?
            .len();
        settings = settings.or(record.int8);
        graphs.push(graph);
    }
    let settings = ensemble_settings(settings, &graphs)?;
    let graph = averaged(&clf, &graphs)?;
    let dir = run.path(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let path = dir.join(INT8_FILE);
    artemis_data::fsutil::write_atomic(&path, &graph)?;
    let record = ExportRecord {
        checkpoint_blake3: clf.export_key(),
        files: [(
            INT8_FILE.to_string(),
            artemis_data::hash::content_hash(&graph),
        )]
        .into(),
        int8: Some(settings.clone()),
    };
    crate::run::write_json(&dir.join(EXPORT_RECORD), &record)?;
    Ok(Quantized {
        path,
        graph,
        float_bytes,
        settings,
    })
}

/// The int8 averaging graph of the ensemble's loaded members: each member exported and
/// quantized into its own `export/` (as `artemis export --quantize int8` of that run would),
/// their int8 graphs averaged as the float ones are. Returns that graph and the settings
/// (the members', which share them; the calibration count is per member).
fn quantize_members(clf: &Classifier, cfg: &QuantizeConfig) -> Result<(Vec<u8>, Int8Record)> {
    let mut graphs = Vec::with_capacity(clf.members.len());
    let mut settings = None;
    for m in &clf.members {
        crate::onnx::write_export(&m.run, &m.network, &m.weights_hash)?;
        let q = crate::quantize::quantize_run(&m.run, cfg)?;
        graphs.push(q.graph);
        settings = Some(q.settings);
    }
    let settings = ensemble_settings(settings, &graphs)?;
    Ok((averaged(clf, &graphs)?, settings))
}

/// The record of an ensemble's int8 graph: the members' settings (`first`, which they share)
/// and the BLAKE3 of each member's int8 graph it averages (`graphs`, in member order).
fn ensemble_settings(first: Option<Int8Record>, graphs: &[Vec<u8>]) -> Result<Int8Record> {
    let mut settings =
        first.ok_or_else(|| EngineError::Config("an ensemble without members".into()))?;
    settings.member_graphs = (graphs.iter())
        .map(|g| artemis_data::hash::content_hash(g))
        .collect();
    Ok(settings)
}

/// An ensemble's one graph (image -> the log of the members' mean calibrated probabilities),
/// made from its loaded members.
fn ensemble_graph(clf: &Classifier) -> Result<Vec<u8>> {
    let graphs = (clf.members.iter())
        .map(|m| {
            m.network
                .to_onnx(&m.run.config.model, OnnxGraph::Logits, &[])
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    averaged(clf, &graphs)
}

/// The averaging graph over the members' logits `graphs` (float or int8, in member order).
fn averaged(clf: &Classifier, graphs: &[Vec<u8>]) -> Result<Vec<u8>> {
    let run = &clf.run;
    let groups = clf.picture_groups();
    let (inputs, reads) = (groups.rules, groups.reads);
    let parts: Vec<Member> = (clf.members.iter().zip(graphs).zip(reads))
        .map(|((m, g), input)| {
            let (scale, shift) = affine(inputs[input].scaling, m.run.config.preprocess.scaling);
            Member {
                model: g,
                temperature: m.temperature() as f32,
                scale,
                shift,
                input,
            }
        })
        .collect();
    let key = clf.export_key();
    let outputs = "logits [batch, classes]: the log of the members' mean calibrated probabilities";
    let sizes: Vec<(usize, usize)> = (inputs.iter())
        .map(|p| (p.height as usize, p.width as usize))
        .collect();
    average(
        &parts,
        &sizes,
        clf.classes().len(),
        "artemis ensemble: mean of the members' calibrated probabilities",
        &run_metadata(run, &key, outputs),
    )
    .map_err(|error| {
        EngineError::Model(artemis_models::ModelError::Export {
            model: crate::ensemble::model_name(run),
            error,
        })
    })
}

/// The classifier's logits graph as ONNX bytes, made from its loaded network (for an
/// ensemble, its members'): what `artemis export` writes as `export/model.onnx`, for callers
/// that hand the graph on without writing it (the page that classifies in the browser). An
/// ensemble whose members prepare their pictures differently gets one input per way of
/// making them (`Classifier::picture_groups`); `artemis export` does not write that graph (artemis runs
/// each member's own), only the page takes it.
pub fn logits_graph(clf: &Classifier) -> Result<Vec<u8>> {
    if !clf.members.is_empty() {
        return ensemble_graph(clf);
    }
    let run = &clf.run;
    let meta = run_metadata(run, &clf.weights_hash, crate::onnx::LOGITS_OUTPUTS);
    Ok(clf
        .network
        .to_onnx(&run.config.model, OnnxGraph::Logits, &meta)?)
}

/// Largest |probability difference| between the averaging graph in ONNX Runtime and the
/// members averaged in burn, on `n` seeded random pictures.
fn parity(clf: &Classifier, graph: &[u8], n: usize) -> Result<f32> {
    let images = random_images(&clf.run, n, 42);
    let refs: Vec<&image::RgbImage> = images.iter().collect();
    let ort = OnnxModel::from_bytes(graph, 1, "ensemble export")?;
    let pre = &clf.run.config.preprocess;
    let shape = [refs.len(), 3, pre.height as usize, pre.width as usize];
    let (_, z) = ort.run(&crate::dataset::batch_data(&refs, pre), shape, "logits")?;
    let burn = clf.probabilities(&refs)?;
    let k = clf.classes().len();
    Ok((z.chunks(k).zip(&burn))
        .flat_map(|(z, p)| {
            let q = artemis_report::prob::softmax(z);
            q.into_iter()
                .zip(p)
                .map(|(a, b)| (a - b).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max))
}
