//! artemis-serve: a web page and a versioned REST API over one trained run.
//!
//! - `GET /` the single page (no external resource); `GET /api/v1/health`;
//!   `GET /api/v1/model` (the model card); `GET /api/v1/openapi.json`;
//!   `POST /api/v1/predict` (multipart field `file`, or the raw body): JPEG, PNG or DICOM in,
//!   the predict row of `docs/predict-json.md` out, with the heat map as an inline PNG data URI.
//! - The model is loaded once. Inference and Grad-CAM run on tokio's blocking pool, at most
//!   `max_concurrent` at a time; up to `max_waiting` more wait their turn (within the
//!   timeout); beyond that a request is answered 503 at once, never queued without bound.
//! - `GET /local/`: the page that classifies in the browser (see [`web`]): the picture never
//!   reaches the server. `--access-log FILE` records every request, one line each.
//! - Hostile input: a body cap (413), a pixel cap checked before decoding (400), unknown
//!   content 415, malformed files 400, each with a JSON `{"error": ...}` that names the upload
//!   but no server path; a per-request timeout (503).

use artemis_data::input::{Format, InputOptions, open_bytes};
use artemis_engine::infer::Classifier;
use artemis_engine::predict::{PredictRow, SCHEMA, explain_framed};
use artemis_engine::run::Run;
use artemis_report::NOTICE;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path as UrlPath, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
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

mod access;
pub mod card;
mod error;
pub mod web;

pub use card::ModelCard;
use card::model_card;
pub use error::ServeError;

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
    /// ONNX Runtime Web's folder for the in-browser page (`None`: the page says it cannot
    /// classify here).
    pub ort_web: Option<std::path::PathBuf>,
    /// A file that gets one line per request (time, method, path, status, milliseconds).
    pub access_log: Option<std::path::PathBuf>,
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
            ort_web: None,
            access_log: None,
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
    /// The in-browser page's model and runtime.
    local: Arc<web::LocalSite>,
    access_log: Option<Arc<access::AccessLog>>,
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
        let page = web::PageOptions {
            max_pixels: cfg.max_pixels,
            served: true,
            int8: cfg.engine.precision == artemis_engine::onnx::Precision::Int8,
        };
        let local = web::LocalSite::open(&clf, &card, cfg.ort_web.as_deref(), page)?;
        let access_log = match &cfg.access_log {
            Some(path) => Some(Arc::new(access::AccessLog::open(path)?)),
            None => None,
        };
        Ok(AppState {
            clf: Arc::new(clf),
            card: Arc::new(card),
            local: Arc::new(local),
            access_log,
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
fn json_error(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        Json(json!({ "error": msg.into(), "notice": NOTICE })),
    )
        .into_response()
}

/// The router: every endpoint, the body cap and the state.
pub fn app(state: AppState) -> Router {
    let max_body = state.cfg.max_body;
    let log = state.access_log.clone();
    let router = Router::new()
        .route("/", get(page))
        .merge(local_routes())
        .route("/api/v1/health", get(health))
        .route("/api/v1/model", get(model))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/predict", post(predict))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state);
    match log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(log, access::record)),
        None => router,
    }
}

/// `/local/...`: the page and its files. Cross-origin isolation headers let ONNX Runtime Web
/// use threads (SharedArrayBuffer).
fn local_routes() -> Router<AppState> {
    Router::new()
        .route("/local", get(|| async { Redirect::permanent("/local/") }))
        .route(
            "/local/",
            get(|| async { isolated("text/html; charset=utf-8", web::PAGE.as_str().into()) }),
        )
        .route(
            "/local/preprocess.js",
            get(|| async { isolated(JS, web::PREPROCESS_JS.into()) }),
        )
        .route("/local/model.json", get(local_card))
        .route("/local/model.onnx", get(local_graph))
        .route("/local/ort/{file}", get(local_runtime))
}

const JS: &str = "text/javascript; charset=utf-8";

fn isolated(content_type: &'static str, body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ),
            (
                header::HeaderName::from_static("cross-origin-embedder-policy"),
                "require-corp",
            ),
            (
                header::HeaderName::from_static("cross-origin-resource-policy"),
                "same-origin",
            ),
        ],
        body,
    )
        .into_response()
}

async fn local_card(State(s): State<AppState>) -> Response {
    isolated("application/json", s.local.card_json.clone().into())
}

async fn local_graph(State(s): State<AppState>) -> Response {
    isolated("application/octet-stream", s.local.graph.clone().into())
}

async fn local_runtime(State(s): State<AppState>, UrlPath(file): UrlPath<String>) -> Response {
    let Some((_, bytes)) = s.local.ort.iter().find(|(n, _)| *n == file) else {
        return json_error(StatusCode::NOT_FOUND, format!("no file {file}"));
    };
    let kind = if file.ends_with(".wasm") {
        "application/wasm"
    } else {
        JS
    };
    isolated(kind, bytes.clone().into())
}

async fn page() -> Html<&'static str> {
    Html(web::SERVER_PAGE.as_str())
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
        json_error(status, format!("upload larger than {max_body} bytes"))
    } else {
        json_error(StatusCode::BAD_REQUEST, text)
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
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, e.body_text()))?;
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
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "multipart body with unexpected part(s) {}: send one part named `file`",
                others.join(", ")
            ),
        ));
    }
    file.ok_or_else(|| {
        json_error(
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
    // The picture as the network saw it before its resize (cropped for a run with
    // `--framing head`): classified, and shown under its map.
    let image = state.clf.framed(&image);
    let e = explain_framed(&state.clf, &image, None, 0.45).map_err(|e| format!("{name}: {e}"))?;
    let uri = |bytes: &[u8]| {
        format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        )
    };
    // That picture at most 640 px, and the coloured map at the same size, for the page's
    // opacity slider.
    let (w, h) = image.dimensions();
    let k = (640.0 / w.max(h) as f32).min(1.0);
    let (sw, sh) = (
        ((w as f32 * k) as u32).max(1),
        ((h as f32 * k) as u32).max(1),
    );
    let shown = image::imageops::resize(&*image, sw, sh, image::imageops::FilterType::Triangle);
    let (input, resize) = state.clf.map_geometry(&image);
    let layer = artemis_explain::heat_layer(&e.cam, sw, sh, input, resize);
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
            let mut r = json_error(
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
        return json_error(StatusCode::BAD_REQUEST, format!("{name}: empty upload"));
    }
    if !accepted(&bytes) {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{name}: not a JPEG, PNG or DICOM file"),
        );
    }
    let Ok(admitted) = state.admission.clone().try_acquire_owned() else {
        return json_error(
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
        Ok(Ok(Err(msg))) => json_error(StatusCode::BAD_REQUEST, msg),
        Ok(Err(msg)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, msg),
        Err(_) => json_error(
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
