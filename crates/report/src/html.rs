//! The evaluation report as one self-contained HTML file: styles inline, every picture embedded
//! as a base64 `data:` URI, no script and no external resource, so it opens offline and can be
//! mailed or archived with a paper's supplementary material.

use crate::error::{ReportError, Result};
use crate::stats::CoveragePoint;
use crate::types::{CLASS_COLUMNS, EvalReport, View};
use base64::Engine as _;
use std::fmt::Write as _;

/// Pictures drawn during an evaluation, as PNG (thumbnails JPEG) bytes.
#[derive(Debug, Default)]
pub struct Figures {
    pub curves: Option<Vec<u8>>,
    /// `(view name, png)`.
    pub confusion: Vec<(String, Vec<u8>)>,
    pub roc: Option<Vec<u8>>,
    pub reliability: Option<Vec<u8>>,
    pub coverage: Option<Vec<u8>>,
    /// `(index into report.predictions, jpeg)` of the most confident mistakes.
    pub mistakes: Vec<(usize, Vec<u8>)>,
    /// The thumbnails are the decoded pictures, not one network's input (an ensemble whose
    /// members frame and resize the picture each their own way).
    pub mistakes_as_decoded: bool,
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn data_uri(mime: &str, bytes: &[u8]) -> String {
    format!(
        "data:{mime};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn img(o: &mut String, png: &[u8], alt: &str, class: &str) {
    let _ = write!(
        o,
        r#"<img class="{class}" alt="{}" src="{}">"#,
        esc(alt),
        data_uri("image/png", png)
    );
}

/// A small JPEG of what the network saw.
pub fn thumbnail_jpeg(img: &image::RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(img)
        .map_err(|e| ReportError::Plot {
            path: "thumbnail".into(),
            reason: e.to_string(),
        })?;
    Ok(out)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn opt3(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

fn view_table(o: &mut String, title: &str, v: &View) {
    let m = &v.metrics;
    let _ = write!(o, "<h3>{}</h3><p>", esc(title));
    let _ = write!(o, "accuracy <b>{}</b>", pct(m.accuracy));
    if let Some(b) = &v.bootstrap {
        let _ = write!(
            o,
            " (95% CI {}–{})",
            pct(b.accuracy.low),
            pct(b.accuracy.high)
        );
    }
    let _ = write!(o, ", macro F1 <b>{:.3}</b>", m.macro_avg.f1);
    if let Some(b) = &v.bootstrap {
        let _ = write!(o, " ({:.3}–{:.3})", b.macro_f1.low, b.macro_f1.high);
    }
    let _ = write!(
        o,
        ", macro ROC-AUC {}, macro PR-AUC {}, n = {}</p>",
        opt3(v.separation.macro_roc_auc),
        opt3(v.separation.macro_pr_auc),
        m.n
    );
    let _ = write!(o, "<table><tr>");
    for h in CLASS_COLUMNS {
        let _ = write!(o, "<th>{h}</th>");
    }
    let _ = write!(o, "</tr>");
    let rows = v.class_rows();
    let last = rows.len() - 1;
    for (i, r) in rows.iter().enumerate() {
        let _ = write!(o, "<tr{}>", if i == last { " class=avg" } else { "" });
        for c in r {
            let _ = write!(o, "<td>{}</td>", esc(c));
        }
        let _ = write!(o, "</tr>");
    }
    let _ = write!(o, "</table>");
}

fn coverage_table(o: &mut String, points: &[CoveragePoint]) {
    let _ = write!(
        o,
        "<table><tr><th>abstain below</th><th>coverage</th><th>accuracy on answered</th>\
         <th>answered</th></tr>"
    );
    for p in points {
        let _ = write!(
            o,
            "<tr><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            p.threshold,
            pct(p.coverage),
            p.accuracy.map_or("–".into(), pct),
            p.covered
        );
    }
    let _ = write!(o, "</table>");
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;\
margin:0 auto;max-width:1250px;padding:16px 24px;color:#222}\
h1{margin-bottom:4px}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}\
.notice{background:#fff3cd;border:2px solid #d39e00;padding:10px 14px;font-weight:600;\
border-radius:6px}\
.warn{background:#f8d7da;border:1px solid #c00;padding:8px 12px;border-radius:6px}\
table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;\
text-align:right}td:first-child,th:first-child{text-align:left}tr.avg{font-style:italic}\
.fig{max-width:100%;border:1px solid #eee;margin:6px 6px 6px 0}.row{display:flex;\
flex-wrap:wrap;gap:12px;align-items:flex-start}\
.mistake{width:190px;font-size:12px;border:1px solid #ddd;padding:6px;border-radius:4px}\
.mistake img{width:176px;height:auto;image-rendering:pixelated}\
.headline{font-size:20px}.muted{color:#666;font-size:13px}";

/// The HTML report: one self-contained page (pictures embedded as data URIs), its sections
/// in the order a reader needs them.
pub fn report_html(r: &EvalReport, f: &Figures) -> String {
    let mut o = String::with_capacity(1 << 20);
    head_section(&mut o, r);
    data_section(&mut o, r);
    results_section(&mut o, r, f);
    calibration_section(&mut o, r, f);
    mistakes_section(&mut o, r, f);
    let _ = write!(
        o,
        "<p class=notice>{}</p><p class=muted>Written by artemis {}.</p></body></html>",
        esc(&r.notice),
        env!("CARGO_PKG_VERSION")
    );
    o
}

/// The page head, the research notice, the run and the headline figures.
fn head_section(o: &mut String, r: &EvalReport) {
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>artemis evaluation: {}</title><style>{STYLE}</style></head><body>",
        esc(&r.description)
    );
    let _ = write!(o, "<h1>artemis evaluation</h1>");
    let _ = write!(o, "<p class=notice id=notice>{}</p>", esc(&r.notice));
    let _ = write!(
        o,
        "<p>Run <code>{}</code><br>Model: {} (task {})<br>Evaluated on: {}</p>",
        esc(&r.run.display().to_string()),
        esc(&r.description),
        r.task,
        esc(&r.source)
    );
    if let Some(v) = r.primary() {
        let m = &v.metrics;
        let _ = write!(
            o,
            "<p class=headline id=headline>Accuracy <b>{}</b>",
            pct(m.accuracy)
        );
        if let Some(b) = &v.bootstrap {
            let _ = write!(o, " [{}, {}]", pct(b.accuracy.low), pct(b.accuracy.high));
        }
        let _ = write!(o, " · macro F1 <b>{:.3}</b>", m.macro_avg.f1);
        if let Some(b) = &v.bootstrap {
            let _ = write!(o, " [{:.3}, {:.3}]", b.macro_f1.low, b.macro_f1.high);
        }
        let _ = write!(
            o,
            " · macro ROC-AUC {} · ECE {:.3} · n = {}</p>",
            opt3(v.separation.macro_roc_auc),
            r.calibration.after.ece,
            m.n
        );
        if let Some(b) = &v.bootstrap {
            let _ = write!(
                o,
                "<p class=muted>Brackets: 95% percentile-bootstrap intervals over the evaluated \
                 images ({} resamples, seed {}).</p>",
                b.resamples, b.seed
            );
        }
    }
}

/// Manifest, protocol, counts per split, evaluated images, overlap with training data.
fn data_section(o: &mut String, r: &EvalReport) {
    let d = &r.data;
    let _ = write!(
        o,
        "<h2>Data and protocol</h2><p>Manifest <code>{}</code>",
        esc(&d.manifest.display().to_string())
    );
    if let Some(p) = &d.protocol {
        let _ = write!(
            o,
            ", protocol <b>{}</b>, seed {}",
            esc(p),
            d.seed.unwrap_or_default()
        );
    }
    let _ = write!(o, ".</p>");
    match d.manifest_matches_run {
        Some(false) => {
            let _ = write!(
                o,
                "<p class=warn>The manifest has changed since this run was trained: the split \
                 below may not be the one the model saw.</p>"
            );
        }
        Some(true) => {
            let _ = write!(
                o,
                "<p class=muted>Manifest bytes match the hash recorded at training time.</p>"
            );
        }
        None => {}
    }
    if !d.split_counts.is_empty() {
        let _ = write!(
            o,
            "<table><tr><th>class</th><th>train</th><th>val</th><th>test</th><th>excluded</th></tr>"
        );
        let mut tot = [0usize; 4];
        for (c, n) in &d.split_counts {
            let _ = write!(o, "<tr><td>{}</td>", esc(c));
            for (i, x) in n.iter().enumerate() {
                tot[i] += x;
                let _ = write!(o, "<td>{x}</td>");
            }
            let _ = write!(o, "</tr>");
        }
        let _ = write!(
            o,
            "<tr class=avg><td>total</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
            tot[0], tot[1], tot[2], tot[3]
        );
    }
    let _ = write!(o, "<p>Evaluated images per class: ");
    let parts: Vec<String> = d
        .evaluated
        .iter()
        .map(|(c, n)| format!("{} {n}", esc(c)))
        .collect();
    let _ = write!(
        o,
        "{}; {} unreadable files skipped.</p>",
        parts.join(", "),
        r.skipped.len()
    );
    if let Some(ov) = &r.overlap {
        let _ = write!(
            o,
            "<h3>Overlap with the training data</h3><p id=overlap>{}.</p>",
            esc(&ov.sentence())
        );
        if !ov.files.is_empty() {
            let _ = write!(
                o,
                "<table><tr><th>file</th><th>duplicates</th><th>split</th><th>kind</th><th>distance</th></tr>"
            );
            for x in ov.files.iter().take(200) {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&x.path.display().to_string()),
                    esc(&x.matches),
                    x.split.name(),
                    esc(&x.kind),
                    x.distance
                );
            }
            let _ = write!(o, "</table>");
            if ov.files.len() > 200 {
                let _ = write!(
                    o,
                    "<p class=muted>First 200 shown; report.json lists all.</p>"
                );
            }
        }
    }
}

/// Training curves, confusion matrices and per-class tables.
fn results_section(o: &mut String, r: &EvalReport, f: &Figures) {
    if let Some(png) = &f.curves {
        let _ = write!(o, "<h2>Training</h2>");
        img(
            o,
            png,
            "training curves: loss and accuracy per epoch",
            "fig",
        );
    }
    let _ = write!(o, "<h2>Confusion matrices</h2><div class=row>");
    for (name, png) in &f.confusion {
        img(o, png, &format!("confusion matrix ({name})"), "fig");
    }
    let _ = write!(o, "</div><h2>Per-class results</h2>");
    if let Some(m) = &r.metrics
        && m.metrics.per_class.len() == 12
    {
        let _ = write!(
            o,
            "<h3>Precision / recall (support) by type and plane</h3><table><tr><th>type</th>"
        );
        for p in artemis_data::labels::Plane::ALL {
            let _ = write!(o, "<th>{}</th>", p.name());
        }
        let _ = write!(o, "</tr>");
        for (t, ty) in artemis_data::labels::TumorType::ALL.iter().enumerate() {
            let _ = write!(o, "<tr><td>{}</td>", ty.name());
            for p in 0..3 {
                let c = &m.metrics.per_class[t * 3 + p];
                let _ = write!(
                    o,
                    "<td>{:.2}/{:.2} ({})</td>",
                    c.precision, c.recall, c.support
                );
            }
            let _ = write!(o, "</tr>");
        }
        let _ = write!(o, "</table>");
    }
    for (title, v) in r.views() {
        view_table(o, &title, v);
    }
}

/// ROC and reliability pictures, temperature scaling, coverage when abstaining.
fn calibration_section(o: &mut String, r: &EvalReport, f: &Figures) {
    let _ = write!(o, "<h2>Separation and calibration</h2><div class=row>");
    if let Some(png) = &f.roc {
        img(o, png, "one-vs-rest ROC curves", "fig");
    }
    if let Some(png) = &f.reliability {
        img(o, png, "reliability diagram", "fig");
    }
    let _ = write!(o, "</div>");
    let c = &r.calibration;
    match &c.fitted_on {
        Some(fit) => {
            let _ = write!(
                o,
                "<p>Temperature scaling: T = {:.3}, fitted on the {}. On the evaluated images: \
                 ECE {:.4} → {:.4}, NLL {:.4} → {:.4} ({} equal-width bins).</p>",
                c.temperature,
                esc(fit),
                c.before.ece,
                c.after.ece,
                c.before.nll,
                c.after.nll,
                crate::stats::ECE_BINS
            );
        }
        None => {
            let _ = write!(
                o,
                "<p>Not calibrated: raw softmax probabilities. ECE {:.4}, NLL {:.4}.</p>",
                c.before.ece, c.before.nll
            );
        }
    }
    let _ = write!(
        o,
        "<h2>Coverage when the model may abstain</h2><div class=row><div>"
    );
    coverage_table(o, &r.coverage);
    if let Some(a) = &r.abstain {
        let _ = write!(o, "<p>At the chosen threshold:</p>");
        coverage_table(o, std::slice::from_ref(a));
    }
    let _ = write!(o, "</div>");
    if let Some(png) = &f.coverage {
        img(o, png, "coverage against accuracy", "fig");
    }
    let _ = write!(o, "</div>");
}

/// The most confident mistakes with what the network saw, and the skipped files.
fn mistakes_section(o: &mut String, r: &EvalReport, f: &Figures) {
    let seen = match f.mistakes_as_decoded {
        true => {
            "The picture as decoded (each member of the ensemble frames and resizes it its \
                 own way)"
        }
        false => "What the network saw (after resizing)",
    };
    let _ = write!(
        o,
        "<h2>Most confident mistakes</h2><p class=muted>{seen}, the true class, and its three \
         most probable classes.</p><div class=row>"
    );
    for (i, jpg) in &f.mistakes {
        let Some(p) = r.predictions.get(*i) else {
            continue;
        };
        let name = p
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = write!(
            o,
            "<div class=mistake><img alt='{}' src='{}'><br><b>{}</b><br>true: {}<br>",
            esc(&name),
            data_uri("image/jpeg", jpg),
            esc(&name),
            esc(&p.truth)
        );
        for (c, q) in &p.top3 {
            let _ = write!(o, "{} {:.3}<br>", esc(c), q);
        }
        let _ = write!(o, "</div>");
    }
    if f.mistakes.is_empty() {
        let _ = write!(o, "<p>No mistakes.</p>");
    }
    let _ = write!(o, "</div>");
    if !r.skipped.is_empty() {
        let _ = write!(o, "<h2>Skipped files</h2><ul>");
        for (p, why) in &r.skipped {
            let _ = write!(
                o,
                "<li><code>{}</code>: {}</li>",
                esc(&p.display().to_string()),
                esc(why)
            );
        }
        let _ = write!(o, "</ul>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_data_uris() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(data_uri("image/png", b"abc"), "data:image/png;base64,YWJj");
        let t = thumbnail_jpeg(&image::RgbImage::new(8, 8)).unwrap();
        assert_eq!(&t[..2], &[0xff, 0xd8]);
    }
}
