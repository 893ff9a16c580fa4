//! `artemis export --quantize int8`: the run's exported logits graph quantized to int8 in QDQ
//! form ([`artemis_models::onnx::quantize`]) with activation ranges calibrated on the run's
//! own training pictures, written beside the float graph as `export/model-int8.onnx` and
//! recorded (hash and settings) in `export/export.json`.

use crate::dataset::{batch_data, load, manifest_items};
use crate::error::{EngineError, Result};
use crate::onnx::{
    EXPORT_DIR, EXPORT_RECORD, ExportRecord, INT8_FILE, Int8Record, MODEL_FILE, OnnxModel,
};
use crate::run::Run;
use artemis_data::manifest::{Manifest, Split};
use artemis_models::onnx::quantize::{Range, Rounding, calibration_graph, quantize};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// How a run's int8 graph is calibrated.
#[derive(Debug, Clone)]
pub struct QuantizeConfig {
    /// Training pictures the activation ranges are taken on (a seeded sample).
    pub images: usize,
    pub seed: u64,
    /// ONNX Runtime threads for the calibration passes (0: every core).
    pub threads: usize,
    /// Convolutions kept in float (`artemis_models::onnx::quantize::float_convs`: `stem`,
    /// `depthwise`, `last` or node names).
    pub keep_float: Vec<String>,
    /// How each output channel's weights are rounded to int8.
    pub rounding: Rounding,
}

impl Default for QuantizeConfig {
    fn default() -> Self {
        QuantizeConfig {
            images: 256,
            seed: 42,
            threads: 0,
            keep_float: Vec::new(),
            rounding: Rounding::default(),
        }
    }
}

/// What [`quantize_run`] wrote: the int8 graph, where, and its settings.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub path: std::path::PathBuf,
    pub graph: Vec<u8>,
    pub float_bytes: u64,
    pub settings: Int8Record,
}

/// The activation ranges of `graph` (a calibration graph, outputs `names`) over `x`: per
/// tensor, the mean over batches of each batch's min and max (a single outlier picture
/// stretches one batch's range, not the whole scale; global min/max cost MobileNetV2 0.7
/// points on the clean protocol's test split).
fn calibrate(
    graph: &[u8],
    names: &[String],
    x: &[Vec<f32>],
    side: [usize; 2],
    threads: usize,
) -> Result<HashMap<String, Range>> {
    let m = OnnxModel::from_bytes(graph, threads, "calibration graph (in memory)")?;
    let mut sums: HashMap<&str, (f64, f64)> = HashMap::new();
    let per = 3 * side[0] * side[1];
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    for batch in x {
        let values = m.run_all(batch, [batch.len() / per, 3, side[0], side[1]], &wanted)?;
        for (n, (_, v)) in names.iter().zip(values) {
            let r = Range::zero().widen(&v);
            let e = sums.entry(n.as_str()).or_default();
            *e = (e.0 + f64::from(r.min), e.1 + f64::from(r.max));
        }
    }
    let k = x.len().max(1) as f64;
    Ok(sums
        .into_iter()
        .map(|(n, (lo, hi))| {
            let r = Range {
                min: (lo / k) as f32,
                max: (hi / k) as f32,
            };
            (n.to_string(), r)
        })
        .collect())
}

/// Float `[b, 3, h, w]` batches of up to 32 of `cfg.images` of the run's training pictures
/// (a seeded sample), preprocessed as the run's network sees them.
pub fn training_batches(run: &Run, cfg: &QuantizeConfig) -> Result<Vec<Vec<f32>>> {
    let c = &run.config;
    let manifest = Manifest::load(&c.manifest)?;
    let mut items = manifest_items(&manifest, &c.data_root, Split::Train, c.task);
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    items.truncate(cfg.images.max(1));
    let max_pixels = artemis_data::image_io::DEFAULT_MAX_PIXELS;
    let loaded = load(items, &c.preprocess, "calibration pictures", max_pixels);
    if loaded.images.is_empty() {
        return Err(EngineError::Config(format!(
            "{}: no readable training picture to calibrate on",
            c.manifest.display()
        )));
    }
    Ok((loaded.images.chunks(32))
        .map(|chunk| batch_data(&chunk.iter().collect::<Vec<_>>(), &c.preprocess))
        .collect())
}

/// Quantizes the run's current export (run `artemis export` first) with ranges from
/// `cfg.images` of its training pictures.
pub fn quantize_run(run: &Run, cfg: &QuantizeConfig) -> Result<Quantized> {
    let batches = training_batches(run, cfg)?;
    quantize_export(run, &batches, cfg)
}

/// Quantizes the run's current export with activation ranges taken on `batches` (what
/// [`training_batches`] gives; the benchmark's random-weight runs use random inputs).
pub fn quantize_export(run: &Run, batches: &[Vec<f32>], cfg: &QuantizeConfig) -> Result<Quantized> {
    let dir = run.path(EXPORT_DIR);
    let record_path = dir.join(EXPORT_RECORD);
    let mut record: ExportRecord = crate::run::read_json(&record_path)?;
    let float_path = dir.join(MODEL_FILE);
    let float = std::fs::read(&float_path).map_err(|e| EngineError::io(&float_path, e))?;
    if record.files.get(MODEL_FILE) != Some(&artemis_data::hash::content_hash(&float)) {
        return Err(EngineError::Checkpoint {
            path: float_path,
            reason: format!("does not match {EXPORT_RECORD}; run `artemis export` again"),
        });
    }
    let c = &run.config;
    let threads = crate::onnx::EngineOptions {
        threads: cfg.threads,
        ..Default::default()
    }
    .threads();
    let export_err = |error| artemis_models::ModelError::Export {
        model: c.model.architecture.name().into(),
        error,
    };
    let keep = cfg.keep_float.clone();
    let float_convs =
        artemis_models::onnx::quantize::float_convs(&float, &keep).map_err(export_err)?;
    let (graph, names) = calibration_graph(&float).map_err(export_err)?;
    let side = [c.preprocess.height as usize, c.preprocess.width as usize];
    let ranges = calibrate(&graph, &names, batches, side, threads)?;
    let images = batches.iter().map(|b| b.len()).sum::<usize>() / (3 * side[0] * side[1]);
    let settings = Int8Record {
        weights: format!(
            "int8, symmetric, per output channel (Conv), {} rounding; float head (Gemm)",
            cfg.rounding.name()
        ),
        activations: "uint8, asymmetric, per tensor, mean of each batch's min/max over the \
                      calibration pictures (batches of 32)"
            .into(),
        calibration_images: images,
        seed: cfg.seed,
        float_layers: keep,
        weight_rounding: cfg.rounding.name().into(),
        member_graphs: Vec::new(),
    };
    let meta = [(
        "artemis.quantization".to_string(),
        serde_json::to_string(&settings).unwrap_or_default(),
    )];
    let int8 = quantize(&float, &ranges, &meta, &float_convs, cfg.rounding).map_err(export_err)?;
    let path = dir.join(INT8_FILE);
    artemis_data::fsutil::write_atomic(&path, &int8)?;
    let hash = artemis_data::hash::content_hash(&int8);
    record.files.insert(INT8_FILE.into(), hash);
    record.int8 = Some(settings.clone());
    crate::run::write_json(&record_path, &record)?;
    Ok(Quantized {
        path,
        graph: int8,
        float_bytes: float.len() as u64,
        settings,
    })
}
