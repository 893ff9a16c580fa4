//! Inference with a trained run: the network in inference mode plus the run's preprocessing,
//! and the run's temperature (see [`crate::calibrate`]) when one has been fitted.

use crate::calibrate::Calibration;
use crate::dataset::{batch_data, batch_tensor, to_vec_f32};
use crate::device::ComputeDevice;
use crate::error::{EngineError, Result};
use crate::onnx::{Backend, EngineOptions, OnnxModel};
use crate::run::Run;
use artemis_data::image_io::ResizeMode;
use artemis_explain::{Cam, grad_cam, grad_cam_with_logits};
use artemis_models::Network;
use artemis_report::prob::softmax_t;
pub use artemis_report::prob::{softmax, top1};
use burn::prelude::*;
use image::RgbImage;
use std::borrow::Cow;

/// What computes a classifier's logits. Heat maps always use the burn network, whichever
/// this is (they need its gradients).
pub enum Engine {
    /// The run's network in burn.
    Burn,
    /// The run's exported graph (`artemis export`) in ONNX Runtime.
    Onnx(OnnxModel),
}

impl Engine {
    /// Flat `[b, k]` logits of prepared images (`[b, 3, h, w]` after preprocessing).
    fn logits(&self, clf: &Classifier, images: &[&RgbImage]) -> Result<Vec<f32>> {
        let pre = &clf.run.config.preprocess;
        match self {
            Engine::Onnx(m) => {
                let shape = [images.len(), 3, pre.height as usize, pre.width as usize];
                Ok(m.run(&batch_data(images, pre), shape, "logits")?.1)
            }
            Engine::Burn => {
                to_vec_f32(
                    clf.network
                        .forward(batch_tensor(images, pre, None, &clf.device)),
                )
            }
        }
    }
}

/// A loaded model ready to classify images.
pub struct Classifier {
    pub run: Run,
    pub network: Network,
    pub device: Device,
    /// Temperature scaling fitted for this run's weights (`None`: probabilities are the raw
    /// softmax).
    pub calibration: Option<Calibration>,
    /// What computes the logits.
    pub runtime: Engine,
    /// BLAKE3 of the loaded `model-best.bpk` (read once, when the classifier was opened); for
    /// an ensemble, its [`Self::export_key`] when it was opened.
    pub weights_hash: String,
    /// Why ONNX Runtime is not used although the run has an export (one line for the user).
    pub notice: Option<String>,
    /// Where [`Self::device`] is (the burn network's device).
    pub placed_on: ComputeDevice,
    /// An ensemble's members (empty for a run): the probabilities are the mean of theirs,
    /// each calibrated with its own temperature. An ensemble's `network` and `device` are its
    /// first member's; its logits and maps come from the members.
    pub members: Vec<Classifier>,
}

impl Classifier {
    /// Loads the best checkpoint of a run on the CPU, with its calibration when one was fitted
    /// for exactly these weights.
    pub fn open(run: Run) -> Result<Classifier> {
        Self::open_with(run, EngineOptions::default())
    }

    /// [`Self::open`] with a choice of engine: with [`Backend::Auto`], ONNX Runtime computes
    /// the logits when the run has a current export (`artemis export`) and the runtime loads,
    /// else burn, with [`Self::notice`] saying why when an export exists; [`Backend::Onnx`]
    /// fails instead of falling back. Heat maps always use the burn network (they need its
    /// gradients).
    pub fn open_with(run: Run, opts: EngineOptions) -> Result<Classifier> {
        opts.validate()?;
        if crate::ensemble::is_ensemble(&run.dir) {
            return Self::open_ensemble(run, opts);
        }
        use crate::onnx::ExportState;
        let export_wanted = match opts.backend {
            Backend::Burn => false,
            Backend::Onnx => true,
            Backend::Auto => opts.onnx_runs_on_device(),
        };
        let (device, burn_on) = opts.device.open_for_burn(export_wanted)?;
        let (network, weights_hash) = run.load_best_hashed(&device)?;
        let calibration = Calibration::load_for(&run, &weights_hash)?;
        let export = match export_wanted {
            false => ExportState::Absent,
            true => crate::onnx::open_export(&run, opts, &weights_hash)?,
        };
        let (runtime, notice) = match (export, opts.backend) {
            (ExportState::Ready(m), _) => (Engine::Onnx(m), None),
            (ExportState::Absent, Backend::Onnx) => {
                return Err(EngineError::Config(format!(
                    "{} has no ONNX export; run `artemis export --run {}` first",
                    run.dir.display(),
                    run.dir.display()
                )));
            }
            (ExportState::Unusable(why), Backend::Onnx) => {
                return Err(EngineError::Config(format!("--engine onnx: {why}")));
            }
            (ExportState::Unusable(why), _) => (
                Engine::Burn,
                Some(format!("{why}; using burn on {burn_on}")),
            ),
            (ExportState::Absent, _) => (Engine::Burn, None),
        };
        // A `cuda` classifier that ONNX Runtime does not serve runs on burn's CPU copy:
        // said, never silent.
        let notice = match (&runtime, burn_on == opts.device, notice) {
            (Engine::Burn, false, None) => Some(format!(
                "--device {}: the run has no current export for ONNX Runtime's CUDA provider \
                 (artemis export) and this build has no CUDA backend of burn's; running on \
                 {burn_on}",
                opts.device
            )),
            (_, _, notice) => notice,
        };
        Ok(Classifier {
            weights_hash,
            run,
            network,
            device,
            placed_on: burn_on,
            calibration,
            runtime,
            notice,
            members: Vec::new(),
        })
    }

    /// An ensemble folder's classifier: its members opened as runs (see [`crate::ensemble`]).
    fn open_ensemble(run: Run, opts: EngineOptions) -> Result<Classifier> {
        let members = (crate::ensemble::members(&run.dir)?.into_iter())
            .map(|(member, r)| {
                let m = Classifier::open_with(r, opts)?;
                crate::ensemble::check_weights(&run.dir, &member, &m.run, &m.weights_hash)?;
                Ok(m)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut notices: Vec<String> = members.iter().filter_map(|m| m.notice.clone()).collect();
        notices.dedup();
        let mut clf = Classifier {
            weights_hash: members_key(&members),
            network: members[0].network.clone(),
            device: members[0].device.clone(),
            placed_on: members[0].placed_on,
            calibration: None,
            runtime: Engine::Burn,
            notice: None,
            run,
            members,
        };
        // The ensemble's own export (one graph averaging the members), when it was made from
        // exactly these weights and temperatures. Members that prepare their pictures
        // differently have none (each member runs its own graph).
        if opts.backend != Backend::Burn && !clf.prepares_per_member() {
            match crate::onnx::open_export(&clf.run, opts, &clf.weights_hash)? {
                crate::onnx::ExportState::Ready(m) => clf.runtime = Engine::Onnx(m),
                crate::onnx::ExportState::Unusable(why) => {
                    notices.push(format!("{why}; averaging the members instead"))
                }
                crate::onnx::ExportState::Absent => {}
            }
        }
        clf.notice = (!notices.is_empty()).then(|| notices.join("; "));
        Ok(clf)
    }

    /// What an ensemble's export is made from (and checked against): every member's weights
    /// and temperature. For a run, the BLAKE3 of its weights.
    pub fn export_key(&self) -> String {
        if self.members.is_empty() {
            self.weights_hash.clone()
        } else {
            members_key(&self.members)
        }
    }

    /// Whether the probabilities are temperature-scaled (for an ensemble: every member's).
    pub fn calibrated(&self) -> bool {
        if self.members.is_empty() {
            self.calibration.is_some()
        } else {
            self.members.iter().all(Classifier::calibrated)
        }
    }

    /// The engine computing the logits, in words (reports, `/api/v1/model`).
    pub fn engine(&self) -> String {
        if !self.members.is_empty() && matches!(self.runtime, Engine::Burn) {
            let mut engines: Vec<String> = self.members.iter().map(Classifier::engine).collect();
            engines.dedup();
            let each = if engines.len() == 1 { "each on" } else { "on" };
            return format!(
                "ensemble of {}, {each} {}",
                self.members.len(),
                engines.join("; ")
            );
        }
        match &self.runtime {
            // The graph's place inside the run, never the server's path to it.
            Engine::Onnx(m) => format!(
                "ONNX Runtime {} ({}, {}/{}{})",
                crate::onnx::ORT_VERSION,
                match m.device {
                    ComputeDevice::Cpu => format!("{} threads", m.threads),
                    d => format!("CUDA execution provider on {d}"),
                },
                crate::onnx::EXPORT_DIR,
                m.file_name(),
                match self.members.len() {
                    0 => String::new(),
                    n => format!(": the mean of an ensemble of {n}"),
                }
            ),
            Engine::Burn => match self.placed_on {
                ComputeDevice::Cpu => "burn (flex CPU backend)".into(),
                d => format!("burn on {d}"),
            },
        }
    }

    pub fn classes(&self) -> &[String] {
        &self.run.config.classes
    }

    /// Temperature applied to the logits (1 when uncalibrated).
    pub fn temperature(&self) -> f64 {
        self.calibration.as_ref().map_or(1.0, |c| c.temperature)
    }

    /// Whether this is an ensemble whose members make their input pictures differently
    /// (framing, input size or resize mode). Each member then prepares its own from the
    /// decoded picture, which is what [`Self::prepare`] hands on.
    pub fn prepares_per_member(&self) -> bool {
        self.picture_groups().rules.len() > 1
    }

    /// The ways an ensemble's members make their pictures, and which each takes
    /// ([`crate::ensemble::picture_groups`]); empty for a run.
    pub fn picture_groups(&self) -> crate::ensemble::PictureGroups {
        crate::ensemble::picture_groups(self.members.iter().map(|m| &m.run.config.preprocess))
    }

    /// The picture the classifier takes, made from a decoded one: framed and resized to the
    /// network's input; for an ensemble that [prepares per member](Self::prepares_per_member),
    /// the decoded picture itself.
    pub fn prepare(&self, img: &RgbImage) -> RgbImage {
        match self.prepares_per_member() {
            true => img.clone(),
            false => self.run.config.preprocess.resize(img),
        }
    }

    /// The picture the network sees before its resize, over which heat maps are drawn
    /// (cropped for a run with `--framing head`; the decoded picture for an ensemble that
    /// prepares per member).
    pub fn framed<'a>(&self, img: &'a RgbImage) -> Cow<'a, RgbImage> {
        match self.prepares_per_member() {
            true => Cow::Borrowed(img),
            false => self.run.config.preprocess.framed(img),
        }
    }

    /// Resizes a [framed](Self::framed) picture to what the classifier takes.
    pub fn fit(&self, framed: &RgbImage) -> RgbImage {
        match self.prepares_per_member() {
            true => framed.clone(),
            false => self.run.config.preprocess.fit(framed),
        }
    }

    /// How a map of a prepared picture lies over the framed one, as `overlay_png` and
    /// `heat_layer` take it: the input size and the resize mode.
    pub fn map_geometry(&self, framed: &RgbImage) -> ((u32, u32), ResizeMode) {
        let pre = &self.run.config.preprocess;
        match self.prepares_per_member() {
            // The ensemble's maps already cover the decoded picture (see `cams`).
            true => (framed.dimensions(), ResizeMode::Squash),
            false => ((pre.width, pre.height), pre.resize),
        }
    }

    /// The pictures an ensemble's members take, made from `images` (what [`Self::prepare`]
    /// gave): the images themselves when the members prepare alike; else one set per way of
    /// making the picture, each made once. Returns the sets and, per member, its set.
    fn member_pictures<'a>(
        &self,
        images: &[&'a RgbImage],
    ) -> (Vec<Vec<Cow<'a, RgbImage>>>, Vec<usize>) {
        let groups = self.picture_groups();
        let sets = match groups.rules.len() {
            0 | 1 => vec![images.iter().map(|&i| Cow::Borrowed(i)).collect()],
            _ => (groups.rules.iter())
                .map(|pre| images.iter().map(|i| Cow::Owned(pre.resize(i))).collect())
                .collect(),
        };
        (sets, groups.reads)
    }

    /// Logits of prepared images, one row per image.
    pub fn logits(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        if !self.members.is_empty() && matches!(self.runtime, Engine::Burn) {
            return self.ensemble_logits(images);
        }
        let k = self.classes().len();
        let logits = self.runtime.logits(self, images)?;
        if let Some(bad) = logits.iter().position(|z| !z.is_finite()) {
            return Err(EngineError::NonFinite {
                path: self.weights_path(),
                reason: format!(
                    "the network computed a non-finite logit ({}) for image {} of the batch: \
                     the weights are damaged or the training diverged; no prediction is made",
                    logits[bad],
                    bad / k.max(1) + 1
                ),
            });
        }
        Ok(logits.chunks(k).map(<[f32]>::to_vec).collect())
    }

    /// An ensemble's "logits": the log of the mean of its members' calibrated probabilities
    /// (a softmax of them at temperature 1 gives that mean back).
    fn ensemble_logits(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let n = self.members.len() as f32;
        let (sets, reads) = self.member_pictures(images);
        let mut mean = vec![vec![0f32; self.classes().len()]; images.len()];
        for (m, &set) in self.members.iter().zip(&reads) {
            let refs: Vec<&RgbImage> = sets[set].iter().map(|c| c.as_ref()).collect();
            for (acc, p) in mean.iter_mut().zip(m.probabilities(&refs)?) {
                acc.iter_mut().zip(p).for_each(|(a, p)| *a += p / n);
            }
        }
        Ok(mean
            .into_iter()
            .map(|p| p.into_iter().map(|v| v.max(1e-30).ln()).collect())
            .collect())
    }

    /// Probabilities of prepared images and a Grad-CAM map each, for the class `pick` chooses
    /// from the image's probabilities. A run needs one pass (the logits come with the maps);
    /// an ensemble takes its mean first, then its members' maps for that class.
    pub fn explain(
        &self,
        images: &[&RgbImage],
        pick: impl Fn(&[f32]) -> usize,
    ) -> Result<(Vec<Cam>, Vec<Vec<f32>>)> {
        if !self.members.is_empty() {
            let probs = self.probabilities(images)?;
            let targets: Vec<usize> = probs.iter().map(|p| pick(p)).collect();
            return Ok((self.cams(images, &targets)?, probs));
        }
        let t = self.temperature();
        let x = batch_tensor(images, &self.run.config.preprocess, None, &self.device);
        let (cams, logits) = grad_cam_with_logits(&self.network, x, |_, z| pick(&softmax_t(z, t)))
            .map_err(explain_error)?;
        Ok((cams, logits.iter().map(|z| softmax_t(z, t)).collect()))
    }

    /// Grad-CAM maps of prepared images for the classes `targets` (an ensemble: the mean of
    /// its members' maps, each member's resampled to the first's grid; for one that prepares
    /// per member, each member's map placed over the decoded picture first, see
    /// [`Self::map_on_decoded`]).
    pub fn cams(&self, images: &[&RgbImage], targets: &[usize]) -> Result<Vec<Cam>> {
        if self.members.is_empty() {
            let x = batch_tensor(images, &self.run.config.preprocess, None, &self.device);
            return grad_cam(&self.network, x, targets).map_err(explain_error);
        }
        let mut maps: Vec<Cam> = Vec::new();
        let n = self.members.len() as f32;
        let (sets, reads) = self.member_pictures(images);
        let decoded = sets.len() > 1;
        for (m, &set) in self.members.iter().zip(&reads) {
            let refs: Vec<&RgbImage> = sets[set].iter().map(|c| c.as_ref()).collect();
            let mut cams = m.cams(&refs, targets)?;
            if decoded {
                cams = (cams.iter().zip(images))
                    .map(|(c, img)| m.map_on_decoded(c, img))
                    .collect();
            }
            if maps.is_empty() {
                maps = cams.into_iter().map(|c| c.scaled(1.0 / n)).collect();
                continue;
            }
            for (acc, c) in maps.iter_mut().zip(cams) {
                acc.add_resampled(&c, 1.0 / n);
            }
        }
        Ok(maps)
    }

    /// This run's map `cam` of the `decoded` picture (made from it by [`Self::prepare`]), on
    /// a grid over the whole decoded picture: [`MAP_CELLS`] cells along its longer side.
    fn map_on_decoded(&self, cam: &Cam, decoded: &RgbImage) -> Cam {
        let pre = &self.run.config.preprocess;
        let (w, h) = decoded.dimensions();
        let cells = |side: u32| {
            ((MAP_CELLS as u64 * u64::from(side)).div_ceil(u64::from(w.max(h)))).max(1) as usize
        };
        artemis_explain::onto_picture(
            cam,
            (w, h),
            pre.framing.region(decoded),
            (pre.width, pre.height),
            pre.resize,
            (cells(w), cells(h)),
        )
    }

    /// The file whose weights compute the logits (the export's graph or the best checkpoint).
    pub fn weights_path(&self) -> std::path::PathBuf {
        match &self.runtime {
            Engine::Onnx(_) => crate::onnx::export_paths(&self.run).0,
            _ if !self.members.is_empty() => self.run.path(crate::ensemble::ENSEMBLE),
            Engine::Burn => self.run.path(crate::run::BEST),
        }
    }

    /// Class probabilities of prepared images (softmax of the logits divided by the run's
    /// temperature), one row per image.
    pub fn probabilities(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let t = self.temperature();
        Ok(self
            .logits(images)?
            .iter()
            .map(|z| artemis_report::prob::softmax_t(z, t))
            .collect())
    }
}

impl crate::dataset::Prepare for Classifier {
    fn prepare(&self, img: &RgbImage) -> RgbImage {
        Classifier::prepare(self, img)
    }
}

/// Cells along the longer side of the decoded picture of a map averaged over members that
/// frame it differently (a MobileNetV2 map at 160 px has 5).
pub const MAP_CELLS: usize = 40;

/// BLAKE3 of the members' weights hashes and temperatures, in order.
fn members_key(members: &[Classifier]) -> String {
    let parts: Vec<String> = (members.iter())
        .map(|m| format!("{}:{}", m.weights_hash, m.temperature()))
        .collect();
    artemis_data::hash::content_hash(parts.join(",").as_bytes())
}

/// A map request the network cannot serve is a configuration error; anything else a tensor
/// error.
fn explain_error(e: artemis_explain::ExplainError) -> EngineError {
    match e {
        artemis_explain::ExplainError::Request(m) => EngineError::Config(m),
        other => EngineError::Tensor(other.to_string()),
    }
}

/// Test-time augmentation: the picture as is, mirrored left-right, and shifted by 4% of its
/// size in each of the four directions (black fill). Probabilities are averaged over the six.
pub const TTA_VIEWS: usize = 6;

/// The [`TTA_VIEWS`] views of a prepared image.
pub fn tta_views(img: &RgbImage) -> Vec<RgbImage> {
    let (w, h) = img.dimensions();
    let (dx, dy) = (
        (w as f32 * 0.04).round() as i64,
        (h as f32 * 0.04).round() as i64,
    );
    let shift = |sx: i64, sy: i64| {
        let mut out = RgbImage::new(w, h);
        image::imageops::overlay(&mut out, img, sx, sy);
        out
    };
    vec![
        img.clone(),
        image::imageops::flip_horizontal(img),
        shift(dx, 0),
        shift(-dx, 0),
        shift(0, dy),
        shift(0, -dy),
    ]
}

impl Classifier {
    /// Logits of every TTA view: `result[v][i]` is view `v` of image `i`.
    pub fn tta_logits(&self, images: &[&RgbImage]) -> Result<Vec<Vec<Vec<f32>>>> {
        let views: Vec<Vec<RgbImage>> = images.iter().map(|i| tta_views(i)).collect();
        (0..TTA_VIEWS)
            .map(|v| {
                let batch: Vec<&RgbImage> = views.iter().map(|vs| &vs[v]).collect();
                self.logits(&batch)
            })
            .collect()
    }

    /// Probabilities (with the run's temperature) averaged over the TTA views.
    pub fn probabilities_tta(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        Ok(average_views(&self.tta_logits(images)?, self.temperature()))
    }
}

/// Mean over views of `softmax(logits / t)`, per image.
pub fn average_views(views: &[Vec<Vec<f32>>], t: f64) -> Vec<Vec<f32>> {
    let Some(first) = views.first() else {
        return Vec::new();
    };
    let n = views.len() as f32;
    (0..first.len())
        .map(|i| {
            let mut acc = vec![0f32; first[i].len()];
            for v in views {
                for (a, p) in acc
                    .iter_mut()
                    .zip(artemis_report::prob::softmax_t(&v[i], t))
                {
                    *a += p / n;
                }
            }
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tta_views_and_their_average() {
        let mut img = image::RgbImage::new(50, 20);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let v = super::tta_views(&img);
        assert_eq!(v.len(), super::TTA_VIEWS);
        assert_eq!(v[1].get_pixel(49, 0).0, [255, 0, 0]); // mirrored
        assert_eq!(v[2].get_pixel(2, 0).0, [255, 0, 0]); // shifted right by 2 (4% of 50)
        assert_eq!(v[3].get_pixel(0, 0).0, [0, 0, 0]); // shifted out
        // Two views of one image: the mean of their softmaxes.
        let views = vec![vec![vec![0.0f32, 0.0]], vec![vec![0.0f32, (3.0f32).ln()]]];
        let p = super::average_views(&views, 1.0);
        assert!((p[0][1] - (0.5 + 0.75) / 2.0).abs() < 1e-6);
    }
}
