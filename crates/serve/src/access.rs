//! The access log (`--access-log FILE`): one line per request, appended as it is answered:
//! `<unix time, s> <method> <path> <status> <milliseconds to the answer's head>`. The query string is left out (it
//! could carry what a user typed); no request body is ever logged.

use crate::error::ServeError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The open log file.
#[derive(Debug)]
pub struct AccessLog {
    file: Mutex<std::fs::File>,
}

impl AccessLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<AccessLog, ServeError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ServeError::File {
                path: path.to_path_buf(),
                reason: format!("cannot open the access log: {e}"),
            })?;
        Ok(AccessLog {
            file: Mutex::new(file),
        })
    }

    fn write(&self, line: &str) {
        if let Ok(mut f) = self.file.lock()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            tracing::warn!("access log: {e}");
        }
    }
}

/// The middleware: answers the request, then logs it.
pub async fn record(State(log): State<Arc<AccessLog>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    log.write(&format!(
        "{now:.3} {method} {path} {} {:.1}\n",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1e3
    ));
    response
}
