//! Prediction inside the browser: a page that decodes, preprocesses and classifies the picture
//! itself with ONNX Runtime Web, so that the scan never leaves the machine.
//!
//! The same folder of files is served by `artemis serve` under `/local/` and written by
//! `artemis export --format web` for any static file host:
//!
//! - `index.html`: the page (`assets/local.html`); `preprocess.js`: artemis's resize and value
//!   scaling in JavaScript, value for value (`assets/preprocess.js`);
//! - `model.json`: the model card, the preprocessing with its table of the 3 x 256 input
//!   values, the temperature, and the graph's name, size and BLAKE3;
//! - `model.onnx`: the run's logits graph (what `artemis export` writes; an ensemble's graph
//!   averages its members);
//! - `ort/`: ONNX Runtime Web's WebAssembly build, from the npm package `onnxruntime-web`
//!   (fetched and checked by `scripts/setup`; checked again here before it is served).

use crate::card::ModelCard;
use crate::error::ServeError;
use artemis_data::transform::Preprocess;
use artemis_engine::infer::Classifier;
use axum::body::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

/// The ONNX Runtime Web release the page runs.
pub const ORT_WEB_VERSION: &str = "1.31.1";

/// Its files the page loads, with their sha256 (the same pins as `scripts/setup`).
pub const ORT_WEB_FILES: [(&str, &str); 2] = [
    (
        "ort.wasm.bundle.min.mjs",
        "51bd7168175767324ab0acfcfc4ca94a096a3826e3ebac9ccc4f195eb865f8dd",
    ),
    (
        "ort-wasm-simd-threaded.wasm",
        "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
    ),
];

/// The in-browser page, its shared style inlined.
pub static PAGE: LazyLock<String> =
    LazyLock::new(|| with_style(include_str!("../assets/local.html")));
/// The server's main page (it sends the picture), its shared style inlined.
pub static SERVER_PAGE: LazyLock<String> =
    LazyLock::new(|| with_style(include_str!("../assets/index.html")));

/// A page with the style both share (`assets/style.css`) in place of its marker.
fn with_style(page: &str) -> String {
    page.replace("/*ARTEMIS-STYLE*/", include_str!("../assets/style.css"))
}
/// The preprocessing module the page imports.
pub const PREPROCESS_JS: &str = include_str!("../assets/preprocess.js");
/// The graph's file name next to the page.
pub const GRAPH_FILE: &str = "model.onnx";

/// Where `scripts/setup` puts ONNX Runtime Web inside the artemis cache folder.
pub fn default_ort_web_dir(cache: &Path) -> PathBuf {
    cache.join(format!("onnxruntime-web-{ORT_WEB_VERSION}"))
}

/// ONNX Runtime Web's files, read and checked.
#[derive(Debug, Clone)]
pub struct OrtWeb {
    /// (file name, contents), in [`ORT_WEB_FILES`] order.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

impl OrtWeb {
    /// Reads the files from `dir`; a missing file or one whose sha256 differs from its pin is
    /// an error naming it.
    pub fn load(dir: &Path) -> Result<OrtWeb, ServeError> {
        let mut files = Vec::new();
        for (name, sha) in ORT_WEB_FILES {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| ServeError::File {
                path: path.clone(),
                reason: format!("{e} (scripts/setup fetches ONNX Runtime Web {ORT_WEB_VERSION})"),
            })?;
            let got = format!("{:x}", Sha256::digest(&bytes));
            if got != sha {
                return Err(ServeError::File {
                    path,
                    reason: format!(
                        "sha256 {got}, not the pinned {sha}: damaged or another version \
                         (refused; run scripts/setup again)"
                    ),
                });
            }
            files.push((name, bytes));
        }
        Ok(OrtWeb { files })
    }
}

/// The graph as the page describes it.
#[derive(Debug, Clone, Serialize)]
pub struct GraphInfo {
    pub file: String,
    pub bytes: usize,
    pub blake3: String,
    /// `fp32`, or `int8` (the run's `export/model-int8.onnx`).
    pub precision: String,
}

/// The graph the page runs, its precision, and why it is not the int8 graph when `int8` asks
/// for it: the run's verified int8 graph when `int8` and it has one, else the float logits
/// graph made from the loaded network.
fn page_graph(
    clf: &Classifier,
    int8: bool,
) -> Result<(Vec<u8>, &'static str, Option<String>), ServeError> {
    let why = match int8 {
        true => match int8_graph(clf)? {
            Ok(bytes) => return Ok((bytes, "int8", None)),
            Err(why) => Some(why),
        },
        false => None,
    };
    let graph = artemis_engine::ensemble_export::logits_graph(clf)?;
    Ok((graph, "fp32", why))
}

/// The run's current int8 graph, or why it has none that can be used.
fn int8_graph(clf: &Classifier) -> Result<Result<Vec<u8>, String>, ServeError> {
    use artemis_engine::onnx::{ExportState, Precision, verified_export};
    Ok(
        match verified_export(&clf.run, Precision::Int8, &clf.export_key())? {
            Ok(bytes) => Ok(bytes),
            Err(ExportState::Unusable(why)) => Err(why),
            Err(_) => Err("no int8 graph".into()),
        },
    )
}

/// `model.json`: what the page needs to classify as artemis does, and to show the model card.
#[derive(Debug, Clone, Serialize)]
pub struct LocalCard {
    #[serde(flatten)]
    pub card: ModelCard,
    pub preprocess: Preprocess,
    pub preprocess_text: String,
    /// The network input for each channel (red, green, blue) and 8-bit value.
    pub input_table: Vec<Vec<f32>>,
    /// Every input of the graph (one, unless an ensemble's members make their pictures
    /// differently): the page makes a tensor for each from the decoded picture.
    pub inputs: Vec<PageInput>,
    /// Largest picture the page decodes, in pixels.
    pub max_pixels: u64,
    pub graph: GraphInfo,
    /// The ONNX Runtime Web release.
    pub runtime: String,
    /// Served by `artemis serve` (a link back to its page), or a static export.
    pub served: bool,
    /// Why the page cannot classify here (ONNX Runtime Web missing), if so.
    pub unavailable: Option<String>,
}

/// One input of the page's graph and how the page makes it from the decoded picture.
#[derive(Debug, Clone, Serialize)]
pub struct PageInput {
    pub name: String,
    pub preprocess: Preprocess,
    /// The network input for each channel and 8-bit value.
    pub input_table: Vec<Vec<f32>>,
}

/// How the page is built.
#[derive(Debug, Clone, Copy)]
pub struct PageOptions {
    /// Largest picture the page decodes, in pixels.
    pub max_pixels: u64,
    /// Served by `artemis serve` (the page links back to the server's), not a static export.
    pub served: bool,
    /// Run the run's int8 graph (`export/model-int8.onnx`) when it has a current one.
    pub int8: bool,
}

/// The page's model: its `model.json` and its graph.
#[derive(Debug, Clone)]
pub struct LocalModel {
    pub card: LocalCard,
    pub graph: Vec<u8>,
    /// Why the page runs the float graph though `opts.int8` asked for the int8 one.
    pub int8_missing: Option<String>,
}

impl LocalModel {
    /// The classifier's graph and card; `ort` says why ONNX Runtime Web cannot be served,
    /// if so. With `opts.int8`, the run's int8 graph when it has a current one (else the
    /// float graph, and why in `int8_missing`).
    pub fn new(
        clf: &Classifier,
        card: &ModelCard,
        opts: PageOptions,
        ort: Option<&ServeError>,
    ) -> Result<LocalModel, ServeError> {
        let (graph, precision, int8_missing) = page_graph(clf, opts.int8)?;
        let pre = clf.run.config.preprocess;
        let inputs: Vec<PageInput> = match clf.members.is_empty() {
            true => vec![pre],
            false => clf.picture_groups().rules,
        }
        .into_iter()
        .enumerate()
        .map(|(g, p)| PageInput {
            name: artemis_engine::ensemble_export::input_name(g),
            preprocess: p,
            input_table: p.scaling.table().iter().map(|c| c.to_vec()).collect(),
        })
        .collect();
        let preprocess_text = match inputs.len() {
            1 => pre.describe(),
            _ => (inputs.iter())
                .map(|i| format!("input {}: {}", i.name, i.preprocess.describe()))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let card = LocalCard {
            card: ModelCard {
                engine: format!("ONNX Runtime Web {ORT_WEB_VERSION} (WebAssembly) in this browser"),
                ..card.clone()
            },
            preprocess: pre,
            preprocess_text,
            input_table: pre.scaling.table().iter().map(|c| c.to_vec()).collect(),
            inputs,
            max_pixels: opts.max_pixels,
            graph: GraphInfo {
                file: GRAPH_FILE.into(),
                bytes: graph.len(),
                blake3: artemis_data::hash::content_hash(&graph),
                precision: precision.into(),
            },
            runtime: ORT_WEB_VERSION.into(),
            served: opts.served,
            unavailable: ort.map(|e| format!("ONNX Runtime Web is not available here: {e}")),
        };
        Ok(LocalModel {
            card,
            graph,
            int8_missing,
        })
    }

    /// `model.json`'s bytes.
    pub fn card_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(&self.card).unwrap_or_default()
    }
}

/// Writes the page, its model and ONNX Runtime Web into `dir` (created; each file written
/// atomically), for a static file host. Returns the files written.
pub fn write_static(
    dir: &Path,
    model: &LocalModel,
    ort: &OrtWeb,
) -> Result<Vec<PathBuf>, ServeError> {
    let ort_dir = dir.join("ort");
    std::fs::create_dir_all(&ort_dir).map_err(|e| ServeError::File {
        path: ort_dir.clone(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<(PathBuf, &[u8])> = vec![
        (dir.join("index.html"), PAGE.as_bytes()),
        (dir.join("preprocess.js"), PREPROCESS_JS.as_bytes()),
        (dir.join(GRAPH_FILE), &model.graph),
    ];
    let card = model.card_json();
    files.push((dir.join("model.json"), &card));
    for (name, bytes) in &ort.files {
        files.push((ort_dir.join(name), bytes));
    }
    for (path, bytes) in &files {
        artemis_data::fsutil::write_atomic(path, bytes).map_err(|e| ServeError::File {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// What `artemis serve` holds for `/local/`: the page's model, and ONNX Runtime Web when it
/// loaded.
/// Held as [`Bytes`], so that a request shares them instead of copying megabytes.
#[derive(Debug)]
pub struct LocalSite {
    pub card_json: Bytes,
    pub graph: Bytes,
    /// ONNX Runtime Web's files (none when it did not load).
    pub ort: Vec<(&'static str, Bytes)>,
}

impl LocalSite {
    /// Builds the graph from the served classifier; ONNX Runtime Web missing or damaged is
    /// logged and shown on the page, not fatal (the server page still works).
    pub fn open(
        clf: &Classifier,
        card: &ModelCard,
        ort_web: Option<&Path>,
        opts: PageOptions,
    ) -> Result<Self, ServeError> {
        let ort = match ort_web {
            Some(dir) => OrtWeb::load(dir),
            None => Err(ServeError::Config(
                "no ONNX Runtime Web folder was given".into(),
            )),
        };
        if let Err(e) = &ort {
            tracing::warn!("the in-browser page (/local/) cannot classify: {e}");
        }
        let model = LocalModel::new(clf, card, opts, ort.as_ref().err())?;
        if let Some(why) = &model.int8_missing {
            tracing::warn!("the in-browser page runs the float graph: {why}");
        }
        let files = ort.map(|o| o.files).unwrap_or_default();
        Ok(LocalSite {
            card_json: model.card_json().into(),
            graph: model.graph.into(),
            ort: files.into_iter().map(|(n, b)| (n, b.into())).collect(),
        })
    }
}

/// `artemis export --format web`: the page, the run's (or ensemble's) graph and ONNX Runtime
/// Web from `ort_dir`, written into `out` for a static file host (`opts.served` is ignored;
/// with `opts.int8` the run must have a current int8 graph). Returns the files written.
pub fn export_static(
    run_dir: &Path,
    out: &Path,
    ort_dir: &Path,
    opts: PageOptions,
) -> Result<Vec<PathBuf>, ServeError> {
    let opts = PageOptions {
        served: false,
        ..opts
    };
    let ort = OrtWeb::load(ort_dir)?;
    let burn = artemis_engine::onnx::EngineOptions {
        backend: artemis_engine::onnx::Backend::Burn,
        ..Default::default()
    };
    let run = artemis_engine::run::Run::open(run_dir)?;
    let clf = Classifier::open_with(run, burn)?;
    let card = crate::card::model_card(&clf);
    let model = LocalModel::new(&clf, &card, opts, None)?;
    if let Some(why) = &model.int8_missing {
        return Err(ServeError::File {
            path: run_dir.join("export").join(artemis_engine::onnx::INT8_FILE),
            reason: format!(
                "no current int8 graph ({why}): run `artemis export --quantize int8` first"
            ),
        });
    }
    write_static(out, &model, &ort)
}
