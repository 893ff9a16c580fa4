//! Every endpoint and every error class, through the router (`app().oneshot`), on a run made
//! here: MobileNetV2 with random weights at 96 px (the API does not care how good it is).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use artemis_data::framing::Framing;
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Preprocess, Scaling};
use artemis_engine::run::{Plateau, RunConfig, Schedule, TrainSettings, save_module, write_json};
use artemis_models::{Architecture, ModelSpec};
use artemis_serve::{AppState, ServeConfig, app};
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use burn::prelude::*;
use http_body_util::BodyExt;
use std::path::{Path, PathBuf};
use tower::ServiceExt;

fn make_run(dir: &Path) {
    make_run_framed(dir, Framing::AsIs);
}

/// A run of an untrained MobileNetV2 at 96 px whose pictures are framed by `framing`.
fn make_run_framed(dir: &Path, framing: Framing) {
    let spec = ModelSpec::new(Architecture::MobileNetV2, 12, (96, 96));
    let net = spec.init(&Device::flex()).unwrap();
    save_module(net, &dir.join("model-best.bpk")).unwrap();
    let manifest = dir.join("m.tsv");
    std::fs::write(&manifest, "# artemis split manifest v1\n").unwrap();
    let cfg = RunConfig {
        artemis_version: "test".into(),
        model: spec,
        task: Task::TypePlane,
        classes: Task::TypePlane.classes(),
        preprocess: Preprocess {
            width: 96,
            height: 96,
            resize: ResizeMode::Squash,
            scaling: Scaling::Imagenet,
            framing,
        },
        augment: Augment::default(),
        train: TrainSettings {
            epochs: 1,
            batch_size: 8,
            learning_rate: 1e-3,
            backbone_lr: None,
            schedule: Schedule::Plateau,
            warmup_epochs: 0.0,
            plateau: Plateau::default(),
            seed: 1,
            ..TrainSettings::default()
        },
        manifest,
        manifest_hash: "x".into(),
        data_root: dir.to_path_buf(),
        pretrained: None,
        trainable_from: 0,
        feature_cache: false,
        cache_copies: 1,
        trained_on: Vec::new(),
    };
    write_json(&dir.join("config.json"), &cfg).unwrap();
}

fn state(dir: &Path, cfg: ServeConfig) -> AppState {
    AppState::open(dir, cfg).unwrap()
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 2) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn jpeg_bytes() -> Vec<u8> {
    let img = image::RgbImage::from_fn(80, 70, |x, _| image::Rgb([(x * 3) as u8; 3]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

fn dicom_bytes(dir: &Path) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::{tags, uids};
    let mut o = dicom_object::InMemDicomObject::new_empty();
    let put = |o: &mut dicom_object::InMemDicomObject, t, vr, v: PrimitiveValue| {
        o.put(DataElement::new(t, vr, v));
    };
    put(
        &mut o,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::MR_IMAGE_STORAGE.into(),
    );
    put(&mut o, tags::SOP_INSTANCE_UID, VR::UI, "2.25.7".into());
    put(&mut o, tags::PATIENT_ID, VR::LO, "SECRET-123".into());
    put(&mut o, tags::ROWS, VR::US, 32u16.into());
    put(&mut o, tags::COLUMNS, VR::US, 32u16.into());
    put(&mut o, tags::SAMPLES_PER_PIXEL, VR::US, 1u16.into());
    put(
        &mut o,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(&mut o, tags::BITS_ALLOCATED, VR::US, 8u16.into());
    put(&mut o, tags::BITS_STORED, VR::US, 8u16.into());
    put(&mut o, tags::HIGH_BIT, VR::US, 7u16.into());
    put(&mut o, tags::PIXEL_REPRESENTATION, VR::US, 0u16.into());
    put(
        &mut o,
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::U8((0..1024).map(|i| (i % 256) as u8).collect()),
    );
    let p = dir.join("x.dcm");
    o.with_meta(
        dicom_object::FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
    )
    .unwrap()
    .write_to_file(&p)
    .unwrap();
    std::fs::read(p).unwrap()
}

/// A PNG whose header claims `w x h` pixels but that carries almost no image data (a
/// decompression bomb's header).
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [ihdr, b"IDAT\x78\x9c".to_vec(), b"IEND".to_vec()] {
        out.extend_from_slice(&(chunk.len() as u32 - 4).to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    out
}

fn multipart(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "artemisboundary7";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn call(state: AppState, req: Request<Body>) -> (StatusCode, serde_json::Value, String) {
    let res = app(state).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        text,
    )
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post_raw(bytes: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/predict")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from(bytes))
        .unwrap()
}

fn post_file(name: &str, bytes: &[u8]) -> Request<Body> {
    let (ct, body) = multipart(name, bytes);
    Request::post("/api/v1/predict")
        .header(header::CONTENT_TYPE, ct)
        .body(Body::from(body))
        .unwrap()
}

fn png_uri(v: &serde_json::Value) -> image::DynamicImage {
    let s = v
        .as_str()
        .unwrap()
        .strip_prefix("data:image/png;base64,")
        .unwrap();
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
    image::load_from_memory(&bytes).unwrap()
}

/// The `[class, probability]` pairs of an answer, as probabilities.
fn probs(v: &serde_json::Value) -> Vec<f64> {
    v["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn endpoints_and_error_classes() {
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path());
    let st = state(tmp.path(), ServeConfig::default());

    let (s, v, _) = call(st.clone(), get("/api/v1/health")).await;
    assert_eq!((s, v["status"].as_str()), (StatusCode::OK, Some("ok")));

    let (s, v, _) = call(st.clone(), get("/api/v1/model")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["classes"].as_array().unwrap().len(), 12);
    assert!(
        v["notice"]
            .as_str()
            .unwrap()
            .contains("not a medical device")
    );
    assert_eq!(v["calibrated"], false);

    let (s, v, _) = call(st.clone(), get("/api/v1/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    for p in [
        "/api/v1/health",
        "/api/v1/model",
        "/api/v1/predict",
        "/api/v1/openapi.json",
    ] {
        assert!(
            v["paths"][p].is_object(),
            "{p} missing from the OpenAPI document"
        );
    }

    let (s, _, html) = call(st.clone(), get("/")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(html.contains("not a medical device") && html.contains("<canvas"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "external resource"
    );

    // Multipart PNG, raw JPEG, raw DICOM: predictions with pictures.
    for req in [
        post_file("slice.png", &png_bytes(120, 100)),
        post_raw(jpeg_bytes()),
        post_raw(dicom_bytes(tmp.path())),
    ] {
        let (s, v, text) = call(st.clone(), req).await;
        assert_eq!(s, StatusCode::OK, "{text}");
        assert_eq!(v["schema"], "artemis.predict/2");
        let p: f64 = v["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[1].as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 1e-4);
        assert!(png_uri(&v["heatmap"]).width() >= 384);
        let (a, b) = (png_uri(&v["image"]), png_uri(&v["heat_layer"]));
        assert_eq!((a.width(), a.height()), (b.width(), b.height()));
        assert!(!text.contains("SECRET-123"));
    }
    let (_, v, _) = call(st.clone(), post_file("slice.png", &png_bytes(64, 64))).await;
    assert_eq!(v["input"], "slice.png");

    // 415: not a picture we read.
    let (s, v, _) = call(st.clone(), post_raw(b"GIF89a....".to_vec())).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(v["error"].as_str().unwrap().contains("JPEG, PNG or DICOM"));
    // 400: malformed, named by the upload's name, no server paths.
    let mut broken = png_bytes(50, 50);
    broken.truncate(60);
    let (s, v, text) = call(st.clone(), post_file("cut.png", &broken)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(v["error"].as_str().unwrap().contains("cut.png"), "{text}");
    assert!(!text.contains("/tmp") && !text.contains(".rs:"), "{text}");
    let mut bad_dicom = dicom_bytes(tmp.path());
    bad_dicom.truncate(300);
    let (s, v, text) = call(st.clone(), post_file("cut.dcm", &bad_dicom)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        v["error"].as_str().unwrap().contains("cut.dcm") && !text.contains("/tmp"),
        "{text}"
    );
    // 400: a decompression bomb is refused from its header.
    let (s, v, text) = call(
        st.clone(),
        post_file("bomb.png", &bomb_png(100_000, 100_000)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        v["error"].as_str().unwrap().contains("over the limit"),
        "{text}"
    );
    // 400: empty body.
    let (s, _, _) = call(st.clone(), post_raw(Vec::new())).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // 503: every inference slot busy (answered at once, not queued).
    let one = state(
        tmp.path(),
        ServeConfig {
            max_concurrent: 1,
            max_waiting: 0,
            ..ServeConfig::default()
        },
    );
    let held = one.reserve_slot().unwrap();
    let (s, v, _) = call(one.clone(), post_raw(jpeg_bytes())).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("busy"));
    drop(held);
    let (s, _, _) = call(one, post_raw(jpeg_bytes())).await;
    assert_eq!(s, StatusCode::OK);

    // 413: over the body cap (raw and multipart).
    let small = state(
        tmp.path(),
        ServeConfig {
            max_body: 2000,
            ..ServeConfig::default()
        },
    );
    let mut big = jpeg_bytes();
    big.resize(5000, 0);
    let (s, v, _) = call(small.clone(), post_raw(big.clone())).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(v["error"].is_string());
    let (s, _, _) = call(small, post_file("big.jpg", &big)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);

    // 503: over the time limit.
    let slow = state(
        tmp.path(),
        ServeConfig {
            timeout: std::time::Duration::from_nanos(1),
            ..ServeConfig::default()
        },
    );
    let (s, v, _) = call(slow, post_raw(jpeg_bytes())).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(v["error"].as_str().unwrap().contains("longer than"));
}

/// A run with an ONNX export is served through ONNX Runtime (the model card says so) with
/// burn's probabilities.
#[tokio::test]
async fn an_exported_run_is_served_by_onnx_runtime() {
    use artemis_engine::onnx::{Backend, EngineOptions};
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path());
    artemis_engine::onnx::export_run(&artemis_engine::run::Run::open(tmp.path()).unwrap()).unwrap();
    let with = |backend| ServeConfig {
        engine: EngineOptions {
            backend,
            threads: 1,
            ..EngineOptions::default()
        },
        ..ServeConfig::default()
    };
    let (burn, ort) = (
        state(tmp.path(), with(Backend::Burn)),
        state(tmp.path(), with(Backend::Auto)),
    );
    let (_, card, _) = call(ort.clone(), get("/api/v1/model")).await;
    assert!(
        card["engine"].as_str().unwrap().starts_with("ONNX Runtime"),
        "{card}"
    );
    // No server path in the answer (the run folder, the export, the manifest, the data).
    let folder = tmp.path().to_string_lossy().into_owned();
    assert!(!card.to_string().contains(&folder), "{card}");
    assert!(
        card["engine"]
            .as_str()
            .unwrap()
            .contains("export/model.onnx"),
        "{card}"
    );
    let (_, card, _) = call(burn.clone(), get("/api/v1/model")).await;
    assert!(
        card["engine"].as_str().unwrap().starts_with("burn"),
        "{card}"
    );
    let (s1, a, _) = call(burn, post_raw(jpeg_bytes())).await;
    let (s2, b, _) = call(ort, post_raw(jpeg_bytes())).await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    for (p, q) in probs(&a).iter().zip(probs(&b)) {
        assert!((p - q).abs() < 1e-4, "{a} vs {b}");
    }
}

/// A raw HTTP/1.1 exchange over TCP: sends `request`, reads to the end of the connection and
/// returns the status, the declared content length and the body bytes received.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> (u16, usize, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(20), c.read_to_end(&mut got))
        .await
        .expect("answer within 20 s");
    let split = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&got)));
    let head = String::from_utf8_lossy(&got[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    (status, length, got[split + 4..].to_vec())
}

/// A POST of a multipart body: `file`, then optional further parts.
fn multipart_request(file: &[u8], extra: Option<(&str, usize)>) -> Vec<u8> {
    let b = "hostileboundary";
    let mut body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"scan.jpg\"\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(file);
    if let Some((name, n)) = extra {
        body.extend_from_slice(
            format!("\r\n--{b}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x.bin\"\r\n\r\n").as_bytes(),
        );
        body.extend((0..n).map(|i| (i % 251) as u8));
    }
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let mut req = format!(
        "POST /api/v1/predict HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={b}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend(body);
    req
}

/// Whether the server closes a connection (read gives end of file or an error) within `limit`.
async fn closed_within(c: &mut tokio::net::TcpStream, limit: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The accept loop against hostile clients, over real TCP on loopback: answers to multipart
/// bodies with parts after `file` arrive whole; slow headers and slow bodies are cut off by the
/// timeouts; one connection over the cap gets 503; shutdown ends within its grace period with
/// a slow client still connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_over_tcp() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path());
    let cfg = ServeConfig {
        timeout: Duration::from_secs(3),
        header_timeout: Duration::from_secs(1),
        max_connections: 4,
        shutdown_grace: Duration::from_secs(2),
        ..ServeConfig::default()
    };
    let st = state(tmp.path(), cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(artemis_serve::serve_on(listener, st, async {
        let _ = stopped.await;
    }));

    // A file alone: 200, the whole answer.
    let (status, len, body) = exchange(addr, &multipart_request(&jpeg_bytes(), None)).await;
    assert_eq!((status, body.len()), (200, len));
    // Parts after `file` (1 MB, and 230 bytes): refused with 400 naming the part, and the
    // answer arrives whole every time (it used to be cut by a reset).
    for n in [1 << 20, 230] {
        for _ in 0..3 {
            let req = multipart_request(&jpeg_bytes(), Some(("extra", n)));
            let (status, len, body) = exchange(addr, &req).await;
            assert_eq!(
                body.len(),
                len,
                "answer cut off after {} of {len} bytes",
                body.len()
            );
            let text = String::from_utf8_lossy(&body);
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("`extra`"), "{text}");
        }
    }

    // Half-sent headers: the connection is closed after the header timeout (1 s).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /api/v1/predict HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(4)).await);
    eprintln!(
        "half-sent headers closed after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // A body sent at 1 kB per 100 ms: answered 408 once the request timeout (3 s) is spent.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let t0 = std::time::Instant::now();
    let mut answer = Vec::new();
    while t0.elapsed() < Duration::from_secs(8) {
        if slow.write_all(&[0xFF; 1024]).await.is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let waited = t0.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        waited < Duration::from_secs(6),
        "slow body held {waited:?}: {text}"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");

    // Four idle connections fill the cap: a fifth is answered 503 at once.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = exchange(addr, b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // The idle ones are closed by the header timeout; then the server answers again.
    for c in &mut idle {
        assert!(closed_within(c, Duration::from_secs(4)).await);
    }
    let (status, _, _) = exchange(
        addr,
        b"GET /api/v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);

    // Shutdown with a slow upload in progress ends within the grace period (2 s).
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&[0; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = std::time::Instant::now();
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("shutdown within the grace period")
        .unwrap();
    eprintln!(
        "shut down in {:.1} s with a slow client connected",
        t0.elapsed().as_secs_f64()
    );
}

/// Runs `dir/a` and `dir/b` (untrained, framed by `framings`) and their ensemble `dir/ens`.
fn two_member_ensemble(dir: &Path, framings: [Framing; 2]) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b, ens) = (dir.join("a"), dir.join("b"), dir.join("ens"));
    for (m, framing) in [&a, &b].into_iter().zip(framings) {
        std::fs::create_dir_all(m).unwrap();
        make_run_framed(m, framing);
    }
    artemis_engine::ensemble::create(&ens, &[a.clone(), b.clone()]).unwrap();
    (a, b, ens)
}

/// An ensemble folder is served like a run: the answer is the mean of the members' answers,
/// with a heat map, and the card names the members.
#[tokio::test]
async fn an_ensemble_is_served_like_a_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, ens) = two_member_ensemble(tmp.path(), [Framing::AsIs, Framing::AsIs]);
    let st = state(&ens, ServeConfig::default());
    let (_, card, _) = call(st.clone(), get("/api/v1/model")).await;
    assert_eq!(card["model"], "ensemble: mobilenetv2 x2", "{card}");
    assert!(
        card["engine"]
            .as_str()
            .unwrap()
            .starts_with("ensemble of 2")
    );
    let (s, e, _) = call(st, post_raw(png_bytes(120, 90))).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert!(png_uri(&e["heatmap"]).width() > 0);
    assert_eq!(png_uri(&e["image"]).width(), 120);
    let (_, pa, _) = call(
        state(&a, ServeConfig::default()),
        post_raw(png_bytes(120, 90)),
    )
    .await;
    let (_, pb, _) = call(
        state(&b, ServeConfig::default()),
        post_raw(png_bytes(120, 90)),
    )
    .await;
    let (pa, pb) = (probs(&pa), probs(&pb));
    assert_ne!(pa, pb, "two differently initialised members");
    for (k, p) in probs(&e).iter().enumerate() {
        assert!((p - (pa[k] + pb[k]) / 2.0).abs() < 1e-5, "class {k}");
    }
}

/// An ensemble whose members frame the picture differently is served: each member prepares
/// its own input, the page shows the decoded picture under the averaged map, and the
/// in-browser page gets a graph with an input per way of making the picture.
#[tokio::test]
async fn an_ensemble_of_members_that_frame_differently_is_served() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, ens) = two_member_ensemble(tmp.path(), [Framing::AsIs, Framing::Head]);
    let st = state(&ens, ServeConfig::default());
    // A dark border around a bright 60x40 "head": the head member sees the crop.
    let img = image::RgbImage::from_fn(120, 90, |x, y| {
        let inside = (30..90).contains(&x) && (20..60).contains(&y);
        image::Rgb(if inside {
            [(x * 3) as u8, (y * 2) as u8, 90]
        } else {
            [2, 2, 2]
        })
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    let bytes = bytes.into_inner();
    let (s, e, _) = call(st.clone(), post_raw(bytes.clone())).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    assert_eq!(png_uri(&e["image"]).width(), 120, "the decoded picture");
    let (_, pb, _) = call(state(&b, ServeConfig::default()), post_raw(bytes.clone())).await;
    assert_eq!(
        png_uri(&pb["image"]).width(),
        60,
        "the head member alone shows its crop"
    );
    let (_, pa, _) = call(state(&a, ServeConfig::default()), post_raw(bytes)).await;
    let (pa, pb) = (probs(&pa), probs(&pb));
    for (k, p) in probs(&e).iter().enumerate() {
        assert!((p - (pa[k] + pb[k]) / 2.0).abs() < 1e-5, "class {k}");
    }
    let (_, card, _) = call(st, get("/local/model.json")).await;
    let inputs: Vec<(&str, &str)> = (card["inputs"].as_array().unwrap().iter())
        .map(|i| {
            let framing = i["preprocess"]["framing"].as_str().unwrap();
            (i["name"].as_str().unwrap(), framing)
        })
        .collect();
    assert_eq!(inputs, [("image", "as-is"), ("image_1", "head")], "{card}");
}

/// An answer's status, headers and body bytes.
async fn raw(state: AppState, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let res = app(state).oneshot(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

#[tokio::test]
async fn the_in_browser_page_and_its_files() {
    use artemis_serve::web::{ORT_WEB_FILES, default_ort_web_dir};
    let tmp = tempfile::tempdir().unwrap();
    make_run(tmp.path());
    let log = tmp.path().join("access.log");
    let cfg = ServeConfig {
        access_log: Some(log.clone()),
        ..ServeConfig::default()
    };
    let st = state(tmp.path(), cfg);
    let (code, headers, _) = raw(st.clone(), get("/local")).await;
    assert_eq!(code, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers[header::LOCATION], "/local/");
    let (code, headers, page) = raw(st.clone(), get("/local/")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        String::from_utf8(page)
            .unwrap()
            .contains("no byte of it is sent anywhere")
    );
    assert_eq!(headers["cross-origin-opener-policy"], "same-origin");
    assert_eq!(headers["cross-origin-embedder-policy"], "require-corp");
    let (code, headers, _) = raw(st.clone(), get("/local/preprocess.js")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    // The model: the run's preprocessing and its table of input values, the graph's hash.
    let (_, card, _) = call(st.clone(), get("/local/model.json")).await;
    let (code, _, graph) = raw(st.clone(), get("/local/model.onnx")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        card["graph"]["blake3"],
        artemis_data::hash::content_hash(&graph)
    );
    assert_eq!(card["graph"]["bytes"], graph.len());
    assert_eq!(card["preprocess"]["width"], 96);
    assert_eq!(card["preprocess"]["resize"], "squash");
    let table = Scaling::Imagenet.table();
    for c in 0..3 {
        for v in [0usize, 1, 77, 255] {
            let got = card["input_table"][c][v].as_f64().unwrap() as f32;
            assert_eq!(
                got.to_bits(),
                table[c][v].to_bits(),
                "channel {c} value {v}"
            );
        }
    }
    assert!(
        card["notice"]
            .as_str()
            .unwrap()
            .contains("not a medical device")
    );
    // The graph is the one `artemis export` writes.
    let run = artemis_engine::run::Run::open(tmp.path()).unwrap();
    let exported = artemis_engine::onnx::export_run(&run).unwrap();
    assert_eq!(std::fs::read(&exported.model).unwrap(), graph);
    // No ONNX Runtime Web folder given: the page says so, its files are 404.
    assert!(
        card["unavailable"]
            .as_str()
            .unwrap()
            .contains("ONNX Runtime Web"),
        "{card}"
    );
    let (code, _, _) = raw(st.clone(), get("/local/ort/ort.wasm.bundle.min.mjs")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // Every request is in the access log, one line each.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(lines.contains(" GET /local/model.onnx 200 "), "{lines}");
    assert!(
        lines.contains(" GET /local/ort/ort.wasm.bundle.min.mjs 404 "),
        "{lines}"
    );
    assert_eq!(lines.lines().count(), 6, "{lines}");

    // A damaged runtime file is refused, named.
    let bad = tmp.path().join("ort-bad");
    std::fs::create_dir_all(&bad).unwrap();
    for (name, _) in ORT_WEB_FILES {
        std::fs::write(bad.join(name), b"not the runtime").unwrap();
    }
    let cfg = ServeConfig {
        ort_web: Some(bad),
        ..ServeConfig::default()
    };
    let (_, card, _) = call(state(tmp.path(), cfg), get("/local/model.json")).await;
    let why = card["unavailable"].as_str().unwrap();
    assert!(
        why.contains(ORT_WEB_FILES[0].0) && why.contains("sha256"),
        "{why}"
    );

    // The real runtime (scripts/setup) is served with its types.
    let dir = default_ort_web_dir(&artemis_models::weights::cache_dir());
    if !dir.join(ORT_WEB_FILES[1].0).is_file() {
        eprintln!(
            "skipping the runtime files: {} is missing (scripts/setup)",
            dir.display()
        );
        return;
    }
    let cfg = ServeConfig {
        ort_web: Some(dir.clone()),
        ..ServeConfig::default()
    };
    let st = state(tmp.path(), cfg);
    let (_, card, _) = call(st.clone(), get("/local/model.json")).await;
    assert!(card["unavailable"].is_null(), "{card}");
    for (name, kind) in [
        (ORT_WEB_FILES[0].0, "text/javascript"),
        (ORT_WEB_FILES[1].0, "application/wasm"),
    ] {
        let (code, headers, body) = raw(st.clone(), get(&format!("/local/ort/{name}"))).await;
        assert_eq!(code, StatusCode::OK);
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert_eq!(body, std::fs::read(dir.join(name)).unwrap());
    }
}
