//! `artemis serve` end to end: the binary on a loopback port, the page driven in headless
//! Chromium through ChromeDriver (`scripts/browser-e2e.py`): a real scan from
//! `../shared/data` uploaded with the file picker, the predicted class shown, the overlay
//! canvas not blank, a screenshot kept (in `$ARTEMIS_ARTIFACTS` when set); then SIGTERM and a
//! clean exit.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup` installs them as root; CI
//! sets `ARTEMIS_REQUIRE_BROWSER=1` so that their absence fails instead of skipping).

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;
use common::*;

#[test]
fn web_page_classifies_an_uploaded_scan() {
    let (Some(browser), Some(driver)) = (chromium(), chromedriver()) else {
        assert!(
            std::env::var("ARTEMIS_REQUIRE_BROWSER").is_err(),
            "ARTEMIS_REQUIRE_BROWSER is set but chromium/chromedriver are missing"
        );
        eprintln!("skipping: no chromium/chromedriver (install Debian's chromium-driver)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    make_dataset(&data);
    let manifest = tmp.path().join("m.tsv");
    split(&data, &manifest, "3", &[]);
    let run = tmp.path().join("run");
    train_baseline(&manifest, &run, "128", "1", &[]);

    let mut server = Command::new(env!("CARGO_BIN_EXE_artemis"))
        .args(["serve", "--run", s(&run), "--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();

    let scan: PathBuf = {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/artemis-planes/Testing/pituitary_coronal");
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files.remove(0)
    };
    let shot = tmp.path().join("serve.png");
    let o = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/browser-e2e.py"))
        .args([url.as_str(), s(&scan), s(&shot)])
        .env("ARTEMIS_CHROMIUM", &browser)
        .env("ARTEMIS_CHROMEDRIVER", &driver)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    if let Ok(dir) = std::env::var("ARTEMIS_ARTIFACTS") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(&shot, Path::new(&dir).join("serve-screenshot.png"));
    }
    // Graceful shutdown on SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let status = server.wait().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    let classes: Vec<String> = artemis_data::labels::Task::TypePlane.classes();
    let predicted = r["predicted"].as_str().unwrap();
    assert!(classes.iter().any(|c| c == predicted), "{report}");
    assert!(r["canvas"]["lit"].as_u64().unwrap() > 1000, "{report}");
    assert!(shot.exists());
    assert!(
        status.success(),
        "server did not exit cleanly on SIGTERM: {status:?}"
    );
}
