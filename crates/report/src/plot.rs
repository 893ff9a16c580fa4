//! Pictures: confusion-matrix heat maps, training curves, ROC curves, reliability diagrams and
//! coverage curves, drawn with `plotters` into memory and encoded as PNG (embedded in the HTML
//! report, or written atomically to a file). Text uses the bundled DejaVu Sans font, so no
//! system font is needed.

use crate::error::{ReportError, Result};
use crate::metrics::Confusion;
use crate::stats::{Curve, ReliabilityBin};
use crate::types::EpochMetrics;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn fonts() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font("sans-serif", style, FONT).is_err() {
                tracing::warn!("bundled font could not be registered; plots will lack text");
            }
        }
    });
}

fn plot_err(name: &str) -> impl Fn(String) -> ReportError + '_ {
    move |reason| ReportError::Plot {
        path: name.into(),
        reason,
    }
}

/// Draws on a white `w` x `h` canvas in memory and returns the PNG bytes. `name` labels errors.
fn render(
    w: u32,
    h: u32,
    name: &str,
    draw: impl FnOnce(&Area<'_>) -> Result<()>,
) -> Result<Vec<u8>> {
    fonts();
    let e = plot_err(name);
    let mut buf = vec![255u8; (w as usize) * (h as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        draw(&root)?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).ok_or_else(|| e("bad buffer size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|x| e(x.to_string()))?;
    Ok(out.into_inner())
}

/// Writes PNG bytes atomically.
pub fn write_png(bytes: &[u8], path: &Path) -> Result<()> {
    Ok(artemis_data::fsutil::write_atomic(path, bytes)?)
}

/// Distinct colours for curves of up to 12 classes (Tableau 10 plus two).
pub const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
];

/// Viridis-like ramp from dark blue (0) to yellow (1).
fn ramp(t: f64) -> RGBColor {
    const STOPS: [(f64, (u8, u8, u8)); 5] = [
        (0.0, (68, 1, 84)),
        (0.25, (59, 82, 139)),
        (0.5, (33, 145, 140)),
        (0.75, (94, 201, 98)),
        (1.0, (253, 231, 37)),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((t0, a), (t1, b)) = (w[0], w[1]);
        if t <= t1 {
            let f = (t - t0) / (t1 - t0);
            let mix =
                |x: u8, y: u8| (f64::from(x) + f * (f64::from(y) - f64::from(x))).round() as u8;
            return RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2));
        }
    }
    RGBColor(253, 231, 37)
}

/// Draws a confusion matrix as a heat map (rows: truth, columns: prediction), colour by
/// row-normalised rate, each cell labelled with its count.
pub fn confusion_png(c: &Confusion, title: &str) -> Result<Vec<u8>> {
    let k = c.classes.len();
    let cell = if k > 6 { 56 } else { 90 };
    let margin_left = 190u32;
    let margin_top = 60u32;
    let w = margin_left + (cell * k) as u32 + 30;
    let h = margin_top + (cell * k) as u32 + 170;
    let e = plot_err("confusion matrix");
    render(w, h, "confusion matrix", |root| {
        root.draw(&Text::new(
            title.to_string(),
            (10, 15),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(|x| e(x.to_string()))?;
        let label_font = ("sans-serif", 12).into_font();
        for t in 0..k {
            let row_total: usize = c.counts[t].iter().sum();
            for p in 0..k {
                let n = c.counts[t][p];
                let rate = if row_total == 0 {
                    0.0
                } else {
                    n as f64 / row_total as f64
                };
                let x0 = margin_left as i32 + (p * cell) as i32;
                let y0 = margin_top as i32 + (t * cell) as i32;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell as i32 - 1, y0 + cell as i32 - 1)],
                    ramp(rate).filled(),
                ))
                .map_err(|x| e(x.to_string()))?;
                let color = if rate > 0.6 { BLACK } else { WHITE };
                root.draw(&Text::new(
                    n.to_string(),
                    (x0 + cell as i32 / 2 - 8, y0 + cell as i32 / 2 - 7),
                    ("sans-serif", 14).into_font().color(&color),
                ))
                .map_err(|x| e(x.to_string()))?;
            }
            root.draw(&Text::new(
                c.classes[t].clone(),
                (
                    8,
                    margin_top as i32 + (t * cell) as i32 + cell as i32 / 2 - 7,
                ),
                label_font.clone(),
            ))
            .map_err(|x| e(x.to_string()))?;
        }
        // Column labels, rotated.
        let rotated = ("sans-serif", 12)
            .into_font()
            .transform(FontTransform::Rotate90);
        for p in 0..k {
            root.draw(&Text::new(
                c.classes[p].clone(),
                (
                    margin_left as i32 + (p * cell) as i32 + cell as i32 / 2 + 6,
                    margin_top as i32 + (k * cell) as i32 + 6,
                ),
                rotated.clone(),
            ))
            .map_err(|x| e(x.to_string()))?;
        }
        root.draw(&Text::new(
            "rows: true class, columns: predicted class; colour: row share".to_string(),
            (10, h as i32 - 22),
            ("sans-serif", 12).into_font(),
        ))
        .map_err(|x| e(x.to_string()))?;
        Ok(())
    })
}

/// Draws loss and accuracy per epoch (train and validation) side by side.
pub fn training_curves(history: &[EpochMetrics]) -> Result<Vec<u8>> {
    let e = plot_err("training curves");
    render(1000, 420, "training curves", |root| {
        let (left, right) = root.split_horizontally(500);
        let last = history.len() as f64 + 0.5;
        let series = |area: &Area<'_>,
                      title: &str,
                      train: Vec<(f64, f64)>,
                      val: Vec<(f64, f64)>|
         -> Result<()> {
            let all = train
                .iter()
                .chain(val.iter())
                .map(|p| p.1)
                .filter(|v| v.is_finite());
            let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
            let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
            let pad = ((hi - lo) * 0.05).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(title, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(0.5..last, (lo - pad)..(hi + pad))
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .draw()
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(LineSeries::new(train, BLUE.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label("train")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
            chart
                .draw_series(LineSeries::new(
                    val.into_iter().filter(|p| p.1.is_finite()),
                    RED.stroke_width(2),
                ))
                .map_err(|x| e(x.to_string()))?
                .label("validation")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|x| e(x.to_string()))?;
            Ok(())
        };
        let pts = |f: fn(&EpochMetrics) -> f64| -> Vec<(f64, f64)> {
            history.iter().map(|m| (m.epoch as f64, f(m))).collect()
        };
        series(&left, "loss", pts(|m| m.train_loss), pts(|m| m.val_loss))?;
        series(
            &right,
            "accuracy",
            pts(|m| m.train_accuracy),
            pts(|m| m.val_accuracy),
        )?;
        Ok(())
    })
}

/// One-vs-rest ROC curves, one line per class with its area in the legend, and the chance
/// diagonal.
pub fn roc_png(curves: &[(String, Curve, f64)], title: &str) -> Result<Vec<u8>> {
    let e = plot_err("ROC curves");
    render(640, 560, "ROC curves", |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.0)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("false-positive rate")
            .y_desc("true-positive rate")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.3).stroke_width(1),
            ))
            .map_err(|x| e(x.to_string()))?;
        for (i, (name, curve, auc)) in curves.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(curve.clone(), colour.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?
                .label(format!("{name} ({auc:.3})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(x.to_string()))?;
        Ok(())
    })
}

/// Reliability diagram: accuracy per confidence bin as bars against the diagonal of perfect
/// calibration, for the probabilities before and after temperature scaling.
pub fn reliability_png(
    panels: &[(String, &[ReliabilityBin], f64)],
    title: &str,
) -> Result<Vec<u8>> {
    let e = plot_err("reliability diagram");
    let w = 420 * panels.len().max(1) as u32;
    render(w, 460, "reliability diagram", |root| {
        let root = root
            .titled(title, ("sans-serif", 18))
            .map_err(|x| e(x.to_string()))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, (name, bins, ece)) in areas.iter().zip(panels) {
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{name} (ECE {:.3})", ece), ("sans-serif", 15))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(45)
                .build_cartesian_2d(0.0..1.0, 0.0..1.0)
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("confidence")
                .y_desc("accuracy")
                .draw()
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                    Rectangle::new(
                        [(b.low, 0.0), (b.high, b.accuracy)],
                        PALETTE[0].mix(0.75).filled(),
                    )
                }))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(
                    bins.iter().filter(|b| b.count > 0).map(|b| {
                        Circle::new((b.mean_confidence, b.accuracy), 3, PALETTE[3].filled())
                    }),
                )
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(LineSeries::new(
                    vec![(0.0, 0.0), (1.0, 1.0)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|x| e(x.to_string()))?;
        }
        Ok(())
    })
}

/// Accuracy on the images kept against the share kept, when the least confident are referred
/// to a person.
pub fn coverage_png(curve: &Curve, title: &str) -> Result<Vec<u8>> {
    let e = plot_err("coverage curve");
    render(560, 420, "coverage curve", |root| {
        let lo = curve.iter().map(|p| p.1).fold(1.0, f64::min);
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, (lo - 0.02).max(0.0)..1.005)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("coverage (share of images answered)")
            .y_desc("accuracy on answered images")
            .draw()
            .map_err(|x| e(x.to_string()))?;
        chart
            .draw_series(LineSeries::new(curve.clone(), PALETTE[0].stroke_width(2)))
            .map_err(|x| e(x.to_string()))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_png_has_text_and_colours() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let c = Confusion {
            classes: vec!["glioma".into(), "no_tumor".into()],
            counts: vec![vec![9, 1], vec![0, 10]],
        };
        write_png(&confusion_png(&c, "test").unwrap(), &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(
            distinct.len() > 20,
            "expected text antialiasing and several colours"
        );
    }
}
