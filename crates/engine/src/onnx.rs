//! ONNX export of a run and inference through ONNX Runtime.
//!
//! - [`export_run`] writes `<run>/export/model.onnx` (image -> logits) and
//!   `<run>/export/backbone.onnx` (image -> last conv map and its global average), each with
//!   the run's preprocessing, classes and checkpoint hash as metadata.
//! - [`OnnxModel`] runs a graph with ONNX Runtime through the `ort` crate. The runtime is a
//!   shared library loaded at run time (`ort`'s `load-dynamic`): `$ARTEMIS_ORT_LIB`, else the
//!   copy `scripts/setup` extracts from the `onnxruntime` 1.32.0 wheel into the artemis cache
//!   (see [`library_path`]). Without it every caller falls back to burn (the
//!   engine choice is made where a classifier is opened, in `infer`).

use crate::device::ComputeDevice;
use crate::error::{EngineError, Result};
use crate::run::{BEST, Run};
use artemis_models::OnnxGraph;
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The ONNX Runtime release `scripts/setup` installs (and the benchmarks were measured with).
pub const ORT_VERSION: &str = "1.32.0";
/// Environment variable naming the runtime library file, overriding the cache copy.
pub const LIB_ENV: &str = "ARTEMIS_ORT_LIB";
/// Folder of the exported graphs inside a run.
pub const EXPORT_DIR: &str = "export";
/// The logits graph.
pub const MODEL_FILE: &str = "model.onnx";
/// The backbone graph (`features`, `pooled`).
pub const BACKBONE_FILE: &str = "backbone.onnx";
/// The export's record, written after the graphs (the commit point of an export): the
/// checkpoint they came from and each graph's BLAKE3, checked before a graph is used.
pub const EXPORT_RECORD: &str = "export.json";

/// What [`EXPORT_RECORD`] holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportRecord {
    /// BLAKE3 of `model-best.bpk` when exported.
    pub checkpoint_blake3: String,
    /// File name in the export folder -> BLAKE3 of its bytes.
    pub files: std::collections::BTreeMap<String, String>,
    /// How `model-int8.onnx` was made (`artemis export --quantize int8`), when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub int8: Option<Int8Record>,
}

/// The int8 graph's file in the export folder.
pub const INT8_FILE: &str = "model-int8.onnx";

/// What `export.json` says of the int8 graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Int8Record {
    pub weights: String,
    pub activations: String,
    /// Training pictures the ranges were calibrated on, and the sample's seed.
    pub calibration_images: usize,
    pub seed: u64,
    /// Convolutions kept in float (empty in records written before this existed).
    #[serde(default)]
    pub float_layers: Vec<String>,
    /// How the weights were rounded: `sum-preserving` or `nearest` (records written before
    /// this existed: nearest).
    #[serde(default = "nearest")]
    pub weight_rounding: String,
    /// An ensemble's int8 graph: the BLAKE3 of each member's own int8 graph it was made
    /// from, in member order (empty for a single run), so that a member quantized again on
    /// its own since makes it stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_graphs: Vec<String>,
}

fn nearest() -> String {
    "nearest".into()
}

/// A run's export, as [`open_export`] finds it.
pub enum ExportState {
    /// The run has no export.
    Absent,
    /// A current, intact export in an ONNX Runtime session.
    Ready(OnnxModel),
    /// An export that cannot be used (no runtime, stale, no record): one line saying why
    /// (the caller adds what it does instead).
    Unusable(String),
}

/// Metadata keys written into every exported graph.
pub mod meta {
    /// BLAKE3 of the checkpoint the graph was exported from (`model-best.bpk`).
    pub const CHECKPOINT: &str = "artemis.checkpoint_blake3";
    pub const ARCHITECTURE: &str = "artemis.architecture";
    /// `[batch, 3, height, width]`.
    pub const INPUT_SHAPE: &str = "artemis.input_shape";
    pub const INPUT_NAME: &str = "artemis.input_name";
    /// The run's [`artemis_data::transform::Preprocess`] as JSON, and in words.
    pub const PREPROCESS: &str = "artemis.preprocess";
    pub const PREPROCESS_TEXT: &str = "artemis.preprocess_text";
    /// Class names in output order, as a JSON list.
    pub const CLASSES: &str = "artemis.classes";
    pub const OUTPUTS: &str = "artemis.outputs";
    pub const NOTICE: &str = "artemis.notice";
}

/// Which engine runs inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// ONNX Runtime when the run has a current export and the runtime loads, else burn.
    #[default]
    Auto,
    Burn,
    /// ONNX Runtime or an error.
    Onnx,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "burn" => Ok(Backend::Burn),
            "onnx" | "ort" | "onnxruntime" => Ok(Backend::Onnx),
            o => Err(format!(
                "unknown engine '{o}' (expected auto, burn or onnx)"
            )),
        }
    }
}

/// How inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineOptions {
    pub backend: Backend,
    /// ONNX Runtime intra-op threads; 0: every core.
    pub threads: usize,
    /// Where the network runs: burn's device, and for ONNX Runtime the CPU or (for
    /// `cuda[:N]`) its CUDA execution provider. ONNX Runtime has no Vulkan or Metal
    /// provider here, so with those `auto` means burn.
    pub device: ComputeDevice,
    /// Which exported graph ONNX Runtime runs: the float one, or the int8 one
    /// (`artemis export --quantize int8`; burn has no int8 network).
    pub precision: Precision,
}

/// The numbers an exported graph computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `export/model.onnx`.
    #[default]
    Fp32,
    /// `export/model-int8.onnx`.
    Int8,
}

impl Precision {
    /// The graph's file in the export folder.
    pub fn file(self) -> &'static str {
        match self {
            Precision::Fp32 => MODEL_FILE,
            Precision::Int8 => INT8_FILE,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            _ => Err(format!("unknown precision '{s}': fp32 or int8")),
        }
    }
}

impl EngineOptions {
    /// Refuses a thread count beyond [`crate::limits::THREADS`], and ONNX Runtime on a
    /// device it has no provider for.
    pub fn validate(&self) -> Result<()> {
        crate::limits::THREADS
            .check(self.threads as u64)
            .map_err(EngineError::Config)?;
        if self.precision == Precision::Int8 && self.backend == Backend::Burn {
            return Err(EngineError::Config(
                "--precision int8 runs the int8 ONNX graph: not with --engine burn".into(),
            ));
        }
        if self.backend == Backend::Onnx && !self.onnx_runs_on_device() {
            return Err(EngineError::Config(format!(
                "--engine onnx runs on cpu or cuda[:N], not on {} (use --engine burn)",
                self.device
            )));
        }
        Ok(())
    }

    /// Whether ONNX Runtime can run on [`Self::device`] (the CPU, or CUDA through its
    /// execution provider).
    pub fn onnx_runs_on_device(&self) -> bool {
        matches!(self.device, ComputeDevice::Cpu | ComputeDevice::Cuda(_))
    }

    /// The thread count to use (`threads`, or the number of cores).
    pub fn threads(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// Where the runtime library is looked for: `$ARTEMIS_ORT_LIB`, else
/// `<artemis cache>/onnxruntime-1.32.0/libonnxruntime.so.1.32.0`.
pub fn library_path() -> PathBuf {
    match std::env::var_os(LIB_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => artemis_models::weights::cache_dir()
            .join(format!("onnxruntime-{ORT_VERSION}"))
            .join(format!("libonnxruntime.so.{ORT_VERSION}")),
    }
}

/// The loaded runtime.
pub struct Runtime {
    pub library: PathBuf,
    env: ort::environment::Environment,
}

/// Loads ONNX Runtime once per process. `Err` says why it is unavailable (missing file, wrong
/// version, failed load), in one line.
pub fn runtime() -> std::result::Result<&'static Runtime, String> {
    static RT: OnceLock<std::result::Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        let library = library_path();
        if !library.is_file() {
            return Err(format!(
                "ONNX Runtime library not found at {} (run scripts/setup, or set {LIB_ENV})",
                library.display()
            ));
        }
        let builder = ort::init_from(&library)
            .map_err(|e| format!("ONNX Runtime library {}: {e}", library.display()))?;
        let env = builder
            .with_name("artemis")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("ONNX Runtime {}: {e}", library.display()))?;
        Ok(Runtime { library, env })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// An ONNX graph in an ONNX Runtime session.
pub struct OnnxModel {
    // `Session::run` takes `&mut`; one inference at a time per model (each uses every core).
    session: Mutex<Session>,
    /// Where the graph came from (a file, or a description of an in-memory graph).
    pub source: String,
    pub threads: usize,
    /// Where the session runs (the CPU, or a CUDA GPU).
    pub device: ComputeDevice,
}

fn ort_err(source: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Onnx {
        path: PathBuf::from(source),
        reason: e.to_string(),
    }
}

impl OnnxModel {
    /// A session over a serialised graph with `threads` intra-op threads.
    pub fn from_bytes(bytes: &[u8], threads: usize, source: &str) -> Result<OnnxModel> {
        Self::from_bytes_on(bytes, threads, source, ComputeDevice::Cpu)
    }

    /// [`Self::from_bytes`] on `device`: the CPU, or `cuda[:N]` through ONNX Runtime's CUDA
    /// execution provider, which must register (a runtime library without it, or a machine
    /// without the GPU, is an error here, not a silent CPU session).
    pub fn from_bytes_on(
        bytes: &[u8],
        threads: usize,
        source: &str,
        device: ComputeDevice,
    ) -> Result<OnnxModel> {
        let rt = runtime().map_err(|e| ort_err(source, e))?;
        let build = || -> std::result::Result<Session, ort::Error> {
            let mut builder = Session::builder(&rt.env)?
                .with_intra_threads(threads.max(1))?
                .with_inter_threads(1)?
                .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)?;
            if let ComputeDevice::Cuda(n) = device {
                let cuda = ort::ep::CUDA::default()
                    .with_device_id(n as i32)
                    .build()
                    .error_on_failure();
                builder = builder.with_execution_providers([cuda])?;
            }
            builder.commit_from_memory(bytes)
        };
        let session = build().map_err(|e| match device {
            ComputeDevice::Cuda(_) => ort_err(
                source,
                format!(
                    "the CUDA execution provider did not start on {device} ({e}); it needs the \
                     GPU build of the runtime (scripts/setup --gpu) and an NVIDIA driver"
                ),
            ),
            _ => ort_err(source, e),
        })?;
        Ok(OnnxModel {
            session: Mutex::new(session),
            source: source.into(),
            threads: threads.max(1),
            device,
        })
    }

    /// A session over an `.onnx` file.
    pub fn from_file(path: &Path, threads: usize) -> Result<OnnxModel> {
        let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
        Self::from_bytes(&bytes, threads, &path.display().to_string())
    }

    /// The graph's file name (`model.onnx`, `model-int8.onnx`), or the whole source for a
    /// graph made in memory.
    pub fn file_name(&self) -> String {
        Path::new(&self.source)
            .file_name()
            .map_or_else(|| self.source.clone(), |n| n.to_string_lossy().into_owned())
    }

    /// A custom metadata value of the graph.
    pub fn metadata(&self, key: &str) -> Option<String> {
        let session = self.session.lock().ok()?;
        session.metadata().ok()?.custom(key)
    }

    /// Runs the graph on a `[b, 3, h, w]` float batch (borrowed, not copied) and returns the
    /// outputs named in `outputs`, in that order, as `(shape, values)` (one for the logits; a
    /// calibration graph's activations).
    pub fn run_all(
        &self,
        input: &[f32],
        shape: [usize; 4],
        outputs: &[&str],
    ) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
        let tensor =
            TensorRef::from_array_view((shape, input)).map_err(|e| ort_err(&self.source, e))?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| ort_err(&self.source, "session lock poisoned by an earlier panic"))?;
        let values = session
            .run(ort::inputs![artemis_models::onnx::INPUT => tensor])
            .map_err(|e| ort_err(&self.source, e))?;
        (outputs.iter())
            .map(|&name| {
                let v = values.get(name).ok_or_else(|| {
                    ort_err(&self.source, format!("the graph has no output '{name}'"))
                })?;
                let (dims, data) = v
                    .try_extract_tensor::<f32>()
                    .map_err(|e| ort_err(&self.source, e))?;
                Ok((
                    dims.iter().map(|&d| d.max(0) as usize).collect(),
                    data.to_vec(),
                ))
            })
            .collect()
    }

    /// [`Self::run_all`] for one output.
    pub fn run(
        &self,
        input: &[f32],
        shape: [usize; 4],
        output: &str,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let mut all = self.run_all(input, shape, &[output])?;
        all.pop()
            .ok_or_else(|| ort_err(&self.source, format!("no output '{output}'")))
    }
}

/// Paths of a run's exported graphs.
pub fn export_paths(run: &Run) -> (PathBuf, PathBuf) {
    let dir = run.path(EXPORT_DIR);
    (dir.join(MODEL_FILE), dir.join(BACKBONE_FILE))
}

/// What a run's logits graph outputs, in its metadata.
pub(crate) const LOGITS_OUTPUTS: &str = "logits [batch, classes]";

/// The metadata written into a run's graphs.
pub(crate) fn run_metadata(run: &Run, checkpoint: &str, outputs: &str) -> Vec<(String, String)> {
    let c = &run.config;
    let pre = &c.preprocess;
    let s = |v: &str| v.to_string();
    vec![
        (s(meta::CHECKPOINT), s(checkpoint)),
        (s(meta::ARCHITECTURE), s(c.model.architecture.name())),
        (s(meta::INPUT_NAME), s(artemis_models::onnx::INPUT)),
        (
            s(meta::INPUT_SHAPE),
            format!("[batch, 3, {}, {}]", pre.height, pre.width),
        ),
        (
            s(meta::PREPROCESS),
            serde_json::to_string(pre).unwrap_or_default(),
        ),
        (s(meta::PREPROCESS_TEXT), pre.describe()),
        (
            s(meta::CLASSES),
            serde_json::to_string(&c.classes).unwrap_or_default(),
        ),
        (s(meta::OUTPUTS), s(outputs)),
        (s(meta::NOTICE), s(artemis_report::notice::NOTICE)),
    ]
}

/// What [`export_run`] wrote, and the network it exported (for [`parity`], so the checkpoint
/// is read once).
#[derive(Debug)]
pub struct Exported {
    pub model: PathBuf,
    pub backbone: PathBuf,
    pub bytes: (u64, u64),
    pub network: artemis_models::Network,
}

/// Writes the run's best checkpoint as ONNX (see the module docs); atomic writes.
pub fn export_run(run: &Run) -> Result<Exported> {
    if crate::ensemble::is_ensemble(&run.dir) {
        return Err(EngineError::Config(format!(
            "{} is an ensemble: its graph averages the members' (see `ensemble_export`)",
            run.dir.display()
        )));
    }
    let device = burn::prelude::Device::flex();
    let (network, checkpoint) = run.load_best_hashed(&device)?;
    let (model, backbone, bytes) = write_export(run, &network, &checkpoint)?;
    Ok(Exported {
        model,
        backbone,
        bytes,
        network,
    })
}

/// Writes the run's graphs from its loaded `network` (whose checkpoint hashes to
/// `checkpoint`) and their record, as [`export_run`] does; returns the two paths and sizes.
pub(crate) fn write_export(
    run: &Run,
    network: &artemis_models::Network,
    checkpoint: &str,
) -> Result<(PathBuf, PathBuf, (u64, u64))> {
    let spec = run.config.model;
    let (model, backbone) = export_paths(run);
    let dir = run.path(EXPORT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::io(&dir, e))?;
    let logits = network.to_onnx(
        &spec,
        OnnxGraph::Logits,
        &run_metadata(run, checkpoint, LOGITS_OUTPUTS),
    )?;
    let features = network.to_onnx(
        &spec,
        OnnxGraph::Backbone,
        &run_metadata(
            run,
            checkpoint,
            "features [batch, channels, h, w] (last conv map); pooled [batch, channels] (pretrained backbones)",
        ),
    )?;
    artemis_data::fsutil::write_atomic(&model, &logits)?;
    artemis_data::fsutil::write_atomic(&backbone, &features)?;
    let hash = artemis_data::hash::content_hash;
    let record = ExportRecord {
        checkpoint_blake3: checkpoint.into(),
        files: [
            (MODEL_FILE.to_string(), hash(&logits)),
            (BACKBONE_FILE.to_string(), hash(&features)),
        ]
        .into(),
        int8: None,
    };
    crate::run::write_json(&dir.join(EXPORT_RECORD), &record)?;
    Ok((
        model,
        backbone,
        (logits.len() as u64, features.len() as u64),
    ))
}

/// A run's exported graph of `precision`, read and checked against the export's record and
/// the run's weights: `Ok(Err(why))` when there is none or it cannot be used (stale, no
/// record), an error when it is damaged (never used, nor silently replaced).
/// `weights_hash` is the BLAKE3 of the run's `model-best.bpk`.
pub fn verified_export(
    run: &Run,
    precision: Precision,
    weights_hash: &str,
) -> Result<std::result::Result<Vec<u8>, ExportState>> {
    let file = precision.file();
    let path = run.path(EXPORT_DIR).join(file);
    if !path.is_file() {
        if precision == Precision::Int8 {
            return Ok(Err(ExportState::Unusable(format!(
                "{} has no int8 graph (artemis export --quantize int8)",
                run.dir.display()
            ))));
        }
        return Ok(Err(ExportState::Absent));
    }
    let again = "run `artemis export` again";
    let record_path = run.path(EXPORT_DIR).join(EXPORT_RECORD);
    let record: ExportRecord = match crate::run::read_json(&record_path) {
        Ok(r) => r,
        Err(e) if record_path.exists() => return Err(e),
        Err(_) => {
            return Ok(Err(ExportState::Unusable(format!(
                "{} has no {EXPORT_RECORD} (exported by an older artemis, or the export was cut \
                 short), so its integrity cannot be checked ({again})",
                path.display()
            ))));
        }
    };
    if record.checkpoint_blake3 != weights_hash {
        return Ok(Err(ExportState::Unusable(format!(
            "{} was exported from other weights than {} ({again})",
            path.display(),
            run.path(BEST).display()
        ))));
    }
    let stale = match precision {
        Precision::Int8 => members_requantized(run, &record)?,
        _ => None,
    };
    if let Some(why) = stale {
        return Ok(Err(ExportState::Unusable(format!(
            "{}: {why} ({again})",
            path.display()
        ))));
    }
    let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
    if record.files.get(file) != Some(&artemis_data::hash::content_hash(&bytes)) {
        return Err(EngineError::Checkpoint {
            path,
            reason: format!(
                "damaged: its contents do not match the BLAKE3 hash in {EXPORT_RECORD} (refused; \
                 {again}, or pass --engine burn)"
            ),
        });
    }
    Ok(Ok(bytes))
}

/// The BLAKE3 of the int8 graph that `member`'s own export record holds ("" when it has
/// none).
fn int8_graph_hash(member: &Run) -> Result<String> {
    let path = member.path(EXPORT_DIR).join(EXPORT_RECORD);
    if !path.is_file() {
        return Ok(String::new());
    }
    let record: ExportRecord = crate::run::read_json(&path)?;
    Ok(record.files.get(INT8_FILE).cloned().unwrap_or_default())
}

/// Why an ensemble's int8 graph (its `record`) no longer matches its members' int8 graphs,
/// when one of them was quantized again (or removed) since it was made.
fn members_requantized(run: &Run, record: &ExportRecord) -> Result<Option<String>> {
    let made = match record.int8.as_ref() {
        Some(r) if !r.member_graphs.is_empty() => &r.member_graphs,
        _ => return Ok(None),
    };
    let runs = crate::ensemble::member_runs(&run.dir)?;
    if runs.len() != made.len() {
        return Ok(Some("made for another list of members".into()));
    }
    for (member, then) in runs.iter().zip(made) {
        if int8_graph_hash(member)? != *then {
            return Ok(Some(format!(
                "made from another int8 graph of member {} than it has now (quantized again \
                 since)",
                member.dir.display()
            )));
        }
    }
    Ok(None)
}

/// The run's logits graph in an ONNX Runtime session when it exists, is intact, matches the
/// run's best checkpoint and the runtime loads ([`verified_export`]).
/// `opts` gives the precision, the threads and the device (the CPU, or CUDA through ONNX
/// Runtime's provider).
pub fn open_export(run: &Run, opts: EngineOptions, weights_hash: &str) -> Result<ExportState> {
    let bytes = match verified_export(run, opts.precision, weights_hash)? {
        Ok(bytes) => bytes,
        Err(state) => return Ok(state),
    };
    if let Err(e) = runtime() {
        return Ok(ExportState::Unusable(e));
    }
    let path = run.path(EXPORT_DIR).join(opts.precision.file());
    let source = path.display().to_string();
    match OnnxModel::from_bytes_on(&bytes, opts.threads(), &source, opts.device) {
        Ok(m) => Ok(ExportState::Ready(m)),
        Err(e) => Ok(ExportState::Unusable(e.to_string())),
    }
}

/// Largest absolute differences between burn and ONNX Runtime on the same inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parity {
    /// Over every logit (`model.onnx` vs the network's `forward`).
    pub logits: f32,
    /// Over every value of the last conv map (`backbone.onnx` vs `forward_features`).
    pub features: f32,
    /// `max(1, largest |value|)` of burn's logits and of its conv map: what a tolerance is
    /// relative to (float32 keeps about 7 digits, so logits of 1000 cannot agree to 1e-4).
    pub scale: (f32, f32),
}

impl Parity {
    /// Both differences within `tol` (absolute up to 1, relative to the scale above it).
    pub fn within(&self, tol: f32) -> bool {
        self.logits <= tol * self.scale.0 && self.features <= tol * self.scale.1
    }
}

fn scale(v: &[f32]) -> f32 {
    v.iter().fold(1f32, |m, x| m.max(x.abs()))
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compares the run's exported graphs with `network` (its best checkpoint) on `images` (any size; resized
/// with the run's preprocessing).
pub fn parity_images(
    run: &Run,
    network: &artemis_models::Network,
    images: &[image::RgbImage],
) -> Result<Parity> {
    use burn::prelude::*;
    let device = Device::flex();
    let pre = &run.config.preprocess;
    let resized: Vec<image::RgbImage> = images.iter().map(|i| pre.resize(i)).collect();
    let refs: Vec<&image::RgbImage> = resized.iter().collect();
    let data = crate::dataset::batch_data(&refs, pre);
    let shape = [refs.len(), 3, pre.height as usize, pre.width as usize];
    let x = || Tensor::<4>::from_data(TensorData::new(data.clone(), shape), &device);
    let threads = EngineOptions::default().threads();
    let (model_path, backbone_path) = export_paths(run);
    let model = OnnxModel::from_file(&model_path, threads)?;
    let backbone = OnnxModel::from_file(&backbone_path, threads)?;
    let burn_logits = crate::dataset::to_vec_f32(network.forward(x()))?;
    let burn_features = crate::dataset::to_vec_f32(network.forward_features(x()))?;
    let (_, ort_logits) = model.run(&data, shape, "logits")?;
    let (_, ort_features) = backbone.run(&data, shape, "features")?;
    Ok(Parity {
        logits: max_abs_diff(&burn_logits, &ort_logits),
        features: max_abs_diff(&burn_features, &ort_features),
        scale: (scale(&burn_logits), scale(&burn_features)),
    })
}

/// [`parity_images`] on `n` seeded random pictures at the run's input size.
pub fn parity(run: &Run, network: &artemis_models::Network, n: usize, seed: u64) -> Result<Parity> {
    parity_images(run, network, &random_images(run, n, seed))
}

/// `n` (at least one) seeded random pictures at the run's input size.
pub fn random_images(run: &Run, n: usize, seed: u64) -> Vec<image::RgbImage> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pre = &run.config.preprocess;
    (0..n.max(1))
        .map(|_| {
            image::RgbImage::from_fn(pre.width, pre.height, |_, _| {
                image::Rgb([rng.random(), rng.random(), rng.random()])
            })
        })
        .collect()
}
