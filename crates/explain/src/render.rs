//! Heat-map pictures: a class activation map blended over the user's image in the *inferno*
//! colour map (perceptually uniform, readable in grey print), with a colour bar, a caption and
//! the research-use notice. Text is drawn with `plotters` and the bundled DejaVu Sans font.

use crate::{Cam, ExplainError, Result};
use artemis_data::image_io::ResizeMode;
use image::{Rgb, RgbImage};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("../../report/assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn fonts() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// How the picture is drawn.
#[derive(Debug, Clone)]
pub struct OverlayStyle {
    /// Weight of the colour map over the image, 0..=1.
    pub opacity: f32,
    /// First caption line (e.g. `glioma_coronal 0.93 (Grad-CAM)`).
    pub title: String,
    /// Second caption line (the notice).
    pub notice: String,
    /// Longest side of the drawn image in pixels (larger images are shown smaller).
    pub max_side: u32,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        OverlayStyle {
            opacity: 0.45,
            title: String::new(),
            notice: "Research use only. artemis is not a medical device and must not be used for diagnosis."
                .into(),
            max_side: 640,
        }
    }
}

/// Where the original image lies inside the network input (`resize` of an `ow x oh` image
/// to `iw x ih`): `(x0, y0, w, h)` in input pixels. Mirrors `artemis_data::image_io::resize_rgb`.
pub fn placement(ow: u32, oh: u32, iw: u32, ih: u32, mode: ResizeMode) -> (f32, f32, f32, f32) {
    match mode {
        ResizeMode::Squash => (0.0, 0.0, iw as f32, ih as f32),
        ResizeMode::KeepAspect => {
            let s = (iw as f64 / ow as f64).min(ih as f64 / oh as f64);
            let rw = ((ow as f64 * s).round() as u32).clamp(1, iw);
            let rh = ((oh as f64 * s).round() as u32).clamp(1, ih);
            (
                ((iw - rw) / 2) as f32,
                ((ih - rh) / 2) as f32,
                rw as f32,
                rh as f32,
            )
        }
    }
}

/// The map's value at every pixel of an `ow x oh` original, as `[0, 1]` floats (row-major).
pub fn upsample(cam: &Cam, ow: u32, oh: u32, iw: u32, ih: u32, mode: ResizeMode) -> Vec<f32> {
    let (x0, y0, cw, ch) = placement(ow, oh, iw, ih, mode);
    let (gx, gy) = (cam.width as f32 / iw as f32, cam.height as f32 / ih as f32);
    let mut out = Vec::with_capacity((ow * oh) as usize);
    for y in 0..oh {
        let iy = y0 + (y as f32 + 0.5) * ch / oh as f32;
        for x in 0..ow {
            let ix = x0 + (x as f32 + 0.5) * cw / ow as f32;
            out.push(cam.sample(ix * gx, iy * gy));
        }
    }
    out
}

/// A network's map over the whole picture it was made from, on a `grid` (`(width, height)`
/// cells) spread over that `picture` (`(width, height)` pixels): `cam` is the map of a network
/// input made from the `region` `(x, y, width, height)` of the picture (its framing's crop),
/// resized to `input` with `mode`. Each cell takes the map at its centre, 0 outside the region.
/// This brings the maps of networks that frame one picture differently onto one grid, to be
/// averaged.
pub fn onto_picture(
    cam: &Cam,
    picture: (u32, u32),
    region: (u32, u32, u32, u32),
    input: (u32, u32),
    mode: ResizeMode,
    grid: (usize, usize),
) -> Cam {
    let (rx, ry, rw, rh) = region;
    let (x0, y0, cw, ch) = placement(rw.max(1), rh.max(1), input.0, input.1, mode);
    let (gx, gy) = (
        cam.width as f32 / input.0 as f32,
        cam.height as f32 / input.1 as f32,
    );
    let mut values = Vec::with_capacity(grid.0 * grid.1);
    for cy in 0..grid.1 {
        let py = (cy as f32 + 0.5) * picture.1 as f32 / grid.1 as f32 - ry as f32;
        for cx in 0..grid.0 {
            let px = (cx as f32 + 0.5) * picture.0 as f32 / grid.0 as f32 - rx as f32;
            let inside = (0.0..rw as f32).contains(&px) && (0.0..rh as f32).contains(&py);
            values.push(match inside {
                false => 0.0,
                true => {
                    let ix = x0 + px * cw / rw as f32;
                    let iy = y0 + py * ch / rh as f32;
                    cam.sample(ix * gx, iy * gy)
                }
            });
        }
    }
    Cam {
        width: grid.0,
        height: grid.1,
        values,
        class: cam.class,
        peak: cam.peak,
    }
}

fn inferno(v: f32) -> [u8; 3] {
    let c = colorous::INFERNO.eval_continuous(f64::from(v.clamp(0.0, 1.0)));
    [c.r, c.g, c.b]
}

/// The map alone, upsampled to `ow x oh` and coloured (for viewers that blend it themselves,
/// such as the web page's opacity slider).
pub fn heat_layer(cam: &Cam, ow: u32, oh: u32, input: (u32, u32), mode: ResizeMode) -> RgbImage {
    let v = upsample(cam, ow, oh, input.0, input.1, mode);
    RgbImage::from_fn(ow, oh, |x, y| Rgb(inferno(v[(y * ow + x) as usize])))
}

/// Draws `cam` over `original` (the image as the user gave it, before resizing to the network
/// input `iw x ih` with `mode`) and returns PNG bytes.
pub fn overlay_png(
    original: &RgbImage,
    cam: &Cam,
    input: (u32, u32),
    mode: ResizeMode,
    style: &OverlayStyle,
) -> Result<Vec<u8>> {
    fonts();
    let err = |reason: String| ExplainError::Render {
        path: "heat map".into(),
        reason,
    };
    let (ow, oh) = original.dimensions();
    if ow == 0 || oh == 0 {
        return Err(err("empty image".into()));
    }
    // Drawn size: the original, shrunk to max_side, enlarged to at least 256 px.
    let long = ow.max(oh) as f32;
    let scale = (style.max_side as f32 / long).min(1.0).max(384.0 / long);
    let (dw, dh) = (
        ((ow as f32 * scale).round() as u32).max(1),
        ((oh as f32 * scale).round() as u32).max(1),
    );
    let shown = image::imageops::resize(original, dw, dh, image::imageops::FilterType::Triangle);
    let heat = upsample(cam, dw, dh, input.0, input.1, mode);
    // The notice on one line when it fits (about 6.5 px a character at 12 px), else split
    // after its first sentence.
    let notice: Vec<&str> = if style.notice.len() as u32 * 13 / 2 < dw + 80 {
        vec![style.notice.as_str()]
    } else {
        match style.notice.split_once(". ") {
            Some((a, b)) => vec![a, b],
            None => vec![style.notice.as_str()],
        }
    };
    let (top, bar_w, right) = (46u32, 16u32, 64u32);
    let bottom = 8 + 16 * notice.len() as u32;
    let (w, h) = (dw + 12 + bar_w + right, dh + top + bottom);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let a = style.opacity.clamp(0.0, 1.0);
    for y in 0..dh {
        for x in 0..dw {
            let p = shown.get_pixel(x, y).0;
            let c = inferno(heat[(y * dw + x) as usize]);
            let o = (((y + top) * w + x) * 3) as usize;
            for i in 0..3 {
                buf[o + i] = (f32::from(p[i]) * (1.0 - a) + f32::from(c[i]) * a).round() as u8;
            }
        }
    }
    // Colour bar: 1 at the top, 0 at the bottom.
    let bx = dw + 12;
    for y in 0..dh {
        let c = inferno(1.0 - y as f32 / (dh - 1).max(1) as f32);
        for x in bx..bx + bar_w {
            let o = (((y + top) * w + x) * 3) as usize;
            buf[o..o + 3].copy_from_slice(&c);
        }
    }
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = |x: String| err(x);
        let text = |s: &str, x: i32, y: i32, size: u32| {
            root.draw(&Text::new(
                s.to_string(),
                (x, y),
                ("sans-serif", size).into_font(),
            ))
            .map_err(|x| e(x.to_string()))
        };
        text(&style.title, 6, 6, 16)?;
        text(
            "Grad-CAM: where the evidence for this class lies",
            6,
            26,
            12,
        )?;
        let tx = (bx + bar_w + 4) as i32;
        text("high", tx, top as i32, 12)?;
        text("low", tx, (top + dh) as i32 - 12, 12)?;
        for (i, line) in notice.iter().enumerate() {
            text(line, 6, (top + dh + 6 + 16 * i as u32) as i32, 12)?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| err("bad buffer".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|x| err(x.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam_peak_left() -> Cam {
        Cam {
            width: 4,
            height: 4,
            values: (0..16)
                .map(|i| if i % 4 == 0 { 1.0 } else { 0.0 })
                .collect(),
            class: 0,
            peak: 1.0,
        }
    }

    #[test]
    fn a_map_of_a_crop_lands_on_its_region_of_the_picture() {
        // The map's left column is hot; it was made from the region x 50..90, y 0..40 of a
        // 100x40 picture, squashed to 16x16.
        let cam = cam_peak_left();
        let on = onto_picture(
            &cam,
            (100, 40),
            (50, 0, 40, 40),
            (16, 16),
            ResizeMode::Squash,
            (10, 4),
        );
        assert_eq!((on.width, on.height, on.class, on.peak), (10, 4, 0, 1.0));
        let row: Vec<f32> = (0..10).map(|x| on.at(x, 1)).collect();
        // Cells 0-4 and 9 (x 0..50 and 90..100) lie outside the region; cell 5 (x 55) is its
        // left eighth, where the map is hot; cell 8 (x 85) its right eighth, cold.
        assert!(
            row[..5].iter().chain(&row[9..]).all(|&v| v == 0.0),
            "{row:?}"
        );
        assert!(row[5] > 0.9 && row[8] < 0.01, "{row:?}");
        // The whole picture as the region, on the map's own grid: the map back.
        let same = onto_picture(
            &cam,
            (16, 16),
            (0, 0, 16, 16),
            (16, 16),
            ResizeMode::Squash,
            (4, 4),
        );
        assert_eq!(same.values, cam.values);
    }

    #[test]
    fn upsampling_follows_the_resize_geometry() {
        let cam = cam_peak_left();
        // Squash: the left column of the grid covers the left quarter of the original.
        let v = upsample(&cam, 40, 20, 16, 16, ResizeMode::Squash);
        assert!(v[10 * 40 + 1] > 0.9 && v[10 * 40 + 38] < 0.01);
        // Keep-aspect: a 40x20 original fills rows 4..12 of a 16x16 input; its left edge
        // still meets the grid's left column.
        assert_eq!(
            placement(40, 20, 16, 16, ResizeMode::KeepAspect),
            (0.0, 4.0, 16.0, 8.0)
        );
        let v = upsample(&cam, 40, 20, 16, 16, ResizeMode::KeepAspect);
        assert!(v[10 * 40 + 1] > 0.9);
    }

    #[test]
    fn overlay_has_the_heat_where_the_map_peaks() {
        let img = RgbImage::from_pixel(300, 200, image::Rgb([128, 128, 128]));
        let png = overlay_png(
            &img,
            &cam_peak_left(),
            (16, 16),
            ResizeMode::Squash,
            &OverlayStyle {
                title: "glioma_coronal 0.93".into(),
                ..OverlayStyle::default()
            },
        )
        .unwrap();
        let out = image::load_from_memory(&png).unwrap().to_rgb8();
        // Image area starts 46 px down; 300x200 is enlarged to 384 px on its long side.
        let px = |x| out.get_pixel(x, 46 + 120).0.map(i32::from);
        let (left, right) = (px(5), px(375));
        // inferno(1) is pale yellow, inferno(0) near black: left brighter and yellower.
        assert!(
            left[0] > right[0] + 60 && left[1] > right[1] + 60,
            "{left:?} {right:?}"
        );
    }
}
