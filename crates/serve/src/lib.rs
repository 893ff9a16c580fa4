//! artemis-serve: a web page and a versioned REST API over one trained run.
//!
//! - `GET /` the single page (no external resource); `GET /api/v1/health`;
//!   `GET /api/v1/model` (the model card); `GET /api/v1/openapi.json`;
//!   `POST /api/v1/predict` (multipart field `file`, or the raw body): JPEG, PNG or DICOM in,
//!   the predict row of `docs/predict-json.md` out, with the heat map as an inline PNG data URI.
//! - The model is loaded once. Inference and Grad-CAM run on tokio's blocking pool, at most
//!   `max_concurrent` at a time; up to `max_waiting` more wait their turn (within the
//!   timeout); beyond that a request is answered 503 at once, never queued without bound.
//! - Hostile input: a body cap (413), a pixel cap checked before decoding (400), unknown
//!   content 415, malformed files 400, each with a JSON `{"error": ...}` that names the upload
//!   but no server path; a per-request timeout (503).

use artemis_data::input::{Format, InputOptions, open_bytes};
use artemis_engine::infer::Classifier;
use artemis_engine::predict::{PredictRow, SCHEMA, explain};
use artemis_engine::run::{Run, read_json};
use artemis_report::EvalReport;
use artemis_report::NOTICE;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Errors of the serve crate.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Engine(#[from] artemis_engine::EngineError),
    #[error("{addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    /// Largest request body accepted (bytes).
    pub max_body: usize,
    /// Largest picture accepted (pixels, checked before decoding).
    pub max_pixels: u64,
    /// Requests classified at the same time.
    pub max_concurrent: usize,
    /// Requests that may wait for a slot (first come, first served, within the timeout);
    /// a request beyond `max_concurrent + max_waiting` is answered 503 at once.
    pub max_waiting: usize,
    /// Longest a request may take, from its first body byte to the answer (a slow upload
    /// counts: a client that sends too slowly is answered 408).
    pub timeout: Duration,
    /// Longest a client may take to send a request's headers (and an idle keep-alive
    /// connection may wait for its next request).
    pub header_timeout: Duration,
    /// Open connections at most; one more is answered 503 and closed at once.
    pub max_connections: usize,
    /// On SIGINT/SIGTERM: how long requests in flight may still finish before the process
    /// ends regardless.
    pub shutdown_grace: Duration,
    /// burn or ONNX Runtime for the logits.
    pub engine: artemis_engine::onnx::EngineOptions,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body: 32 << 20,
            max_pixels: 40_000_000,
            max_concurrent: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_waiting: 64,
            timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections: 256,
            shutdown_grace: Duration::from_secs(10),
            engine: Default::default(),
        }
    }
}

/// Bounds of the settings (each bounds memory or a wait); times in whole seconds.
pub mod limits {
    use artemis_engine::limits::{Limit, limit};
    pub const MAX_CONCURRENT: Limit = limit("--max-concurrent", 1, 1024);
    pub const MAX_WAITING: Limit = limit("--max-waiting", 0, 100_000);
    pub const MAX_CONNECTIONS: Limit = limit("--max-connections", 1, 65_536);
    pub const MAX_BODY_MB: Limit = limit("--max-body-mb", 1, 4096);
    /// Longest `--timeout`, `--header-timeout` and `--shutdown-grace`.
    pub const MAX_SECONDS: u64 = 3600;
}

impl ServeConfig {
    pub fn validate(&self) -> Result<(), ServeError> {
        use limits::*;
        let counts = [
            (MAX_CONCURRENT, self.max_concurrent as u64),
            (MAX_WAITING, self.max_waiting as u64),
            (MAX_CONNECTIONS, self.max_connections as u64),
            (MAX_BODY_MB, self.max_body.div_ceil(1 << 20) as u64),
            (artemis_engine::limits::MAX_PIXELS, self.max_pixels),
        ];
        for (limit, value) in counts {
            limit.check(value).map_err(ServeError::Config)?;
        }
        for (flag, t) in [
            ("--timeout", self.timeout),
            ("--header-timeout", self.header_timeout),
            ("--shutdown-grace", self.shutdown_grace),
        ] {
            if t.is_zero() || t.as_secs() > MAX_SECONDS {
                return Err(ServeError::Config(format!(
                    "{flag} {} s is out of range: above 0 and at most {MAX_SECONDS}",
                    t.as_secs_f64()
                )));
            }
        }
        self.engine.validate().map_err(ServeError::Engine)
    }
}

/// What the page and `GET /api/v1/model` show about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub notice: String,
    pub task: String,
    pub classes: Vec<String>,
    pub model: String,
    pub description: String,
    /// What computes the logits (burn, or ONNX Runtime from the run's export).
    pub engine: String,
    pub input: [u32; 2],
    /// The training data's folder name and the manifest's file name (never a server path).
    pub training_data: String,
    pub manifest: String,
    pub protocol: Option<String>,
    pub calibrated: bool,
    pub temperature: f64,
    /// Test-split figures from the run's `report.json`, when `artemis eval` has run.
    pub evaluation: Option<serde_json::Value>,
}

fn model_card(clf: &Classifier) -> ModelCard {
    let run = &clf.run;
    let c = &run.config;
    let report: Option<EvalReport> = read_json(&run.path("report.json")).ok();
    let evaluation = report.as_ref().and_then(|r| {
        let v = r.primary()?;
        Some(json!({
            "source": r.source,
            "n": v.metrics.n,
            "accuracy": v.metrics.accuracy,
            "accuracy_ci95": v.bootstrap.as_ref().map(|b| [b.accuracy.low, b.accuracy.high]),
            "macro_f1": v.metrics.macro_avg.f1,
            "macro_f1_ci95": v.bootstrap.as_ref().map(|b| [b.macro_f1.low, b.macro_f1.high]),
            "macro_roc_auc": v.separation.macro_roc_auc,
            "ece": r.calibration.after.ece,
        }))
    });
    ModelCard {
        notice: NOTICE.into(),
        task: c.task.name().into(),
        classes: c.classes.clone(),
        model: artemis_engine::ensemble::model_name(run),
        description: artemis_engine::eval::describe(run),
        engine: clf.engine(),
        input: [c.preprocess.width, c.preprocess.height],
        training_data: last_component(&c.data_root),
        manifest: last_component(&c.manifest),
        protocol: report.and_then(|r| r.data.protocol),
        calibrated: clf.calibrated(),
        temperature: clf.temperature(),
        evaluation,
    }
}

/// The last component of a path (a folder or file name without where it lies on the server).
fn last_component(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Shared state: the model, its card, the concurrency permits and the settings.
#[derive(Clone)]
pub struct AppState {
    clf: Arc<Classifier>,
    card: Arc<ModelCard>,
    /// Inference slots.
    permits: Arc<Semaphore>,
    /// Admission: slots plus waiting places.
    admission: Arc<Semaphore>,
    cfg: Arc<ServeConfig>,
}

impl AppState {
    /// Loads the run's best checkpoint (and calibration) once.
    pub fn open(run_dir: &Path, cfg: ServeConfig) -> Result<AppState, ServeError> {
        cfg.validate()?;
        let clf = Classifier::open_with(Run::open(run_dir)?, cfg.engine)?;
        if let Some(notice) = &clf.notice {
            tracing::warn!("{notice}");
        }
        let card = model_card(&clf);
        Ok(AppState {
            clf: Arc::new(clf),
            card: Arc::new(card),
            permits: Arc::new(Semaphore::new(cfg.max_concurrent)),
            admission: Arc::new(Semaphore::new(cfg.max_concurrent + cfg.max_waiting)),
            cfg: Arc::new(cfg),
        })
    }
}

impl AppState {
    /// Takes one inference slot (and its admission place) until the returned permits are
    /// dropped (`None` when all are busy): for callers that run their own work on the model,
    /// and for tests of the 503 path.
    pub fn reserve_slot(
        &self,
    ) -> Option<(
        tokio::sync::OwnedSemaphorePermit,
        tokio::sync::OwnedSemaphorePermit,
    )> {
        let admitted = self.admission.clone().try_acquire_owned().ok()?;
        let slot = self.permits.clone().try_acquire_owned().ok()?;
        Some((admitted, slot))
    }
}

/// A JSON error response.
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": msg.into(), "notice": NOTICE })),
    )
        .into_response()
}

/// The router: every endpoint, the body cap and the state.
pub fn app(state: AppState) -> Router {
    let max_body = state.cfg.max_body;
    Router::new()
        .route("/", get(page))
        .route("/api/v1/health", get(health))
        .route("/api/v1/model", get(model))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/predict", post(predict))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(include_str!("../assets/index.html"))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "notice": NOTICE }))
}

async fn model(State(s): State<AppState>) -> Json<ModelCard> {
    Json((*s.card).clone())
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../assets/openapi.json"),
    )
}

/// Maps a body-reading error to a response (413 past the body cap, else 400).
fn body_error(status: StatusCode, text: String, max_body: usize) -> Response {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        error(status, format!("upload larger than {max_body} bytes"))
    } else {
        error(StatusCode::BAD_REQUEST, text)
    }
}

/// The upload: its bytes and the name to use in messages. A multipart body is read to its end
/// (within the body cap) before anything is answered: an answer sent while the client is still
/// sending parts would be cut off when the connection closes with unread data.
async fn upload(req: Request, state: &AppState) -> Result<(Bytes, String), Response> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let max = state.cfg.max_body;
    if !is_multipart {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(e.status(), e.body_text(), max))?;
        return Ok((bytes, "upload".into()));
    }
    let mut mp = Multipart::from_request(req, state)
        .await
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.body_text()))?;
    let mut file: Option<(Bytes, String)> = None;
    let mut others: Vec<String> = Vec::new();
    while let Some(mut field) = mp
        .next_field()
        .await
        .map_err(|e| body_error(e.status(), e.body_text(), max))?
    {
        let field_name = field.name().unwrap_or("").to_string();
        if field_name == "file" && file.is_none() {
            let upload_name = field
                .file_name()
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                .unwrap_or_else(|| "upload".into());
            let bytes = field
                .bytes()
                .await
                .map_err(|e| body_error(e.status(), e.body_text(), max))?;
            file = Some((bytes, upload_name));
            continue;
        }
        others.push(if field_name == "file" {
            "a second `file`".into()
        } else {
            format!("`{field_name}`")
        });
        // Read to its end without keeping it: only the answer needs the whole body read.
        while field
            .chunk()
            .await
            .map_err(|e| body_error(e.status(), e.body_text(), max))?
            .is_some()
        {}
    }
    if !others.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "multipart body with unexpected part(s) {}: send one part named `file`",
                others.join(", ")
            ),
        ));
    }
    file.ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "multipart body without a `file` field",
        )
    })
}

/// Whether the server classifies uploads of this content: JPEG, PNG and DICOM (a NIfTI
/// volume has no one picture to show; `artemis predict` reads volumes).
fn accepted(bytes: &[u8]) -> bool {
    matches!(Format::sniff(bytes), Some(Format::Image | Format::Dicom))
}

/// The API's answer for one upload: the `predict` row with the schema and the notice, the heat
/// map as a `data:` URI, and the picture as decoded with the coloured map alone at the same
/// size (at most 640 px; the page's opacity slider blends them).
#[derive(Serialize)]
struct Served {
    schema: &'static str,
    notice: &'static str,
    #[serde(flatten)]
    row: PredictRow,
    image: String,
    heat_layer: String,
}

/// Decodes and classifies one upload (blocking). Errors are user messages naming `name`.
fn classify(state: &AppState, bytes: Bytes, name: &str) -> Result<serde_json::Value, String> {
    let opts = InputOptions {
        max_pixels: state.cfg.max_pixels,
        ..InputOptions::default()
    };
    let opened = open_bytes(Vec::from(bytes), Path::new(name), &opts).map_err(|e| e.to_string())?;
    let warning = opened.warning;
    // A multi-frame DICOM shows its first frame (`artemis predict` classifies every frame).
    let image = (opened.pictures.into_iter().next())
        .map(|p| p.image)
        .ok_or_else(|| format!("{name}: no picture in the file"))?;
    let e = explain(&state.clf, &image, None, 0.45).map_err(|e| format!("{name}: {e}"))?;
    let uri = |bytes: &[u8]| {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    // The picture as decoded (at most 640 px) and the coloured map at the same size, for the
    // page's opacity slider.
    let (w, h) = image.dimensions();
    let k = (640.0 / w.max(h) as f32).min(1.0);
    let (sw, sh) = (
        ((w as f32 * k) as u32).max(1),
        ((h as f32 * k) as u32).max(1),
    );
    let shown = image::imageops::resize(&image, sw, sh, image::imageops::FilterType::Triangle);
    let pre = &state.clf.run.config.preprocess;
    let layer = artemis_explain::heat_layer(&e.cam, sw, sh, (pre.width, pre.height), pre.resize);
    let png = |img: &image::RgbImage| -> Result<Vec<u8>, String> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .map_err(|_| "cannot encode picture".to_string())?;
        Ok(out.into_inner())
    };
    let row = PredictRow {
        heatmap: Some(uri(&e.png)),
        warning,
        ..PredictRow::classified(
            Path::new(name),
            &e.probabilities,
            state.clf.classes(),
            state.clf.calibrated(),
        )
    };
    let served = Served {
        schema: SCHEMA,
        notice: NOTICE,
        row,
        image: uri(&png(&shown)?),
        heat_layer: uri(&png(&layer)?),
    };
    serde_json::to_value(served).map_err(|e| format!("{name}: {e}"))
}

async fn predict(State(state): State<AppState>, req: Request) -> Response {
    let started = tokio::time::Instant::now();
    let timeout = state.cfg.timeout;
    let (bytes, name) = match tokio::time::timeout(timeout, upload(req, &state)).await {
        Ok(Ok(u)) => u,
        Ok(Err(r)) => return r,
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!("upload not received within {} s", timeout.as_secs_f32()),
            );
            r.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    if bytes.is_empty() {
        return error(StatusCode::BAD_REQUEST, format!("{name}: empty upload"));
    }
    if !accepted(&bytes) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{name}: not a JPEG, PNG or DICOM file"),
        );
    }
    let Ok(admitted) = state.admission.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server busy: all inference slots and waiting places are taken; try again shortly",
        );
    };
    let st = state.clone();
    let work = async move {
        let permit = st
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "server shutting down".to_string())?;
        tokio::task::spawn_blocking(move || {
            let _held = (admitted, permit);
            classify(&st, bytes, &name)
        })
        .await
        .map_err(|_| "internal error".to_string())
    };
    let left = timeout.saturating_sub(started.elapsed());
    match tokio::time::timeout(left, work).await {
        Ok(Ok(Ok(v))) => Json(v).into_response(),
        Ok(Ok(Err(msg))) => error(StatusCode::BAD_REQUEST, msg),
        Ok(Err(msg)) => error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("request took longer than {} s", timeout.as_secs_f32()),
        ),
    }
}

/// Serves until SIGINT or SIGTERM, then lets the requests in flight finish for at most
/// `shutdown_grace`.
///
/// HTTP/1.1 through hyper directly (axum's `serve` has no read timeouts): headers must arrive
/// within `header_timeout`, at most `max_connections` connections are open (one more is
/// answered 503 and closed), and [`predict`] bounds reading the body by `timeout`.
pub async fn serve(run_dir: &Path, cfg: ServeConfig) -> Result<(), ServeError> {
    let addr = cfg.addr;
    let state = AppState::open(run_dir, cfg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    tracing::info!("serving {} on http://{local}", run_dir.display());
    println!("artemis serve: http://{local}  ({NOTICE})");
    serve_on(listener, state, shutdown()).await;
    Ok(())
}

/// The accept loop of [`serve`] on a bound listener, until `stop` completes.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let cfg = state.cfg.clone();
    let router = app(state);
    let connections = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_timeout);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _held = permit;
            if let Err(e) = conn.await {
                tracing::debug!("connection: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("every connection closed"),
        _ = tokio::time::sleep(cfg.shutdown_grace) => tracing::warn!(
            "shutdown: connections still open after {} s; closing them",
            cfg.shutdown_grace.as_secs_f32()
        ),
    }
}

/// Answers a connection over the cap with 503 and closes it.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = json!({
        "error": "server busy: too many open connections; try again shortly",
        "notice": NOTICE,
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        // Read what the client has sent so far: closing with unread data would reset the
        // connection and lose the answer.
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 8192];
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
