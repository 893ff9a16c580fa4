//! Inference with a trained run: the network in inference mode plus the run's preprocessing,
//! and the run's temperature (see [`crate::calibrate`]) when one has been fitted.

use crate::calibrate::Calibration;
use crate::dataset::{batch_tensor, to_vec_f32};
use crate::error::Result;
use crate::run::Run;
use artemis_models::Network;
use burn::prelude::*;
use image::RgbImage;

/// A loaded model ready to classify images.
pub struct Classifier {
    pub run: Run,
    pub network: Network,
    pub device: Device,
    /// Temperature scaling fitted for this run's weights (`None`: probabilities are the raw
    /// softmax).
    pub calibration: Option<Calibration>,
}

impl Classifier {
    /// Loads the best checkpoint of a run on the CPU, with its calibration when one was fitted
    /// for exactly these weights.
    pub fn open(run: Run) -> Result<Classifier> {
        let device = Device::flex();
        let network = run.load_best(&device)?;
        let calibration = Calibration::load_for(&run)?;
        Ok(Classifier {
            run,
            network,
            device,
            calibration,
        })
    }

    pub fn classes(&self) -> &[String] {
        &self.run.config.classes
    }

    /// Temperature applied to the logits (1 when uncalibrated).
    pub fn temperature(&self) -> f64 {
        self.calibration.as_ref().map_or(1.0, |c| c.temperature)
    }

    /// Resizes a decoded image to the network's input.
    pub fn prepare(&self, img: &RgbImage) -> RgbImage {
        self.run.config.preprocess.resize(img)
    }

    /// Logits of prepared images, one row per image.
    pub fn logits(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let k = self.classes().len();
        let x = batch_tensor(images, &self.run.config.preprocess, None, &self.device);
        let logits = to_vec_f32(self.network.forward(x))?;
        Ok(logits.chunks(k).map(<[f32]>::to_vec).collect())
    }

    /// Class probabilities of prepared images (softmax of the logits divided by the run's
    /// temperature), one row per image.
    pub fn probabilities(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>> {
        let t = self.temperature();
        Ok(self
            .logits(images)?
            .iter()
            .map(|z| crate::stats::softmax_t(z, t))
            .collect())
    }
}

/// Numerically stable softmax of one row.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// Index and value of the largest probability.
pub fn top1(p: &[f32]) -> (usize, f32) {
    p.iter().enumerate().fold(
        (0, f32::NEG_INFINITY),
        |b, (i, &x)| if x > b.1 { (i, x) } else { b },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = super::softmax(&[1.0, 3.0, 2.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(super::top1(&p).0, 3);
        let q = super::softmax(&[0.0, (2.0f32).ln()]);
        assert!((q[1] - 2.0 / 3.0).abs() < 1e-6);
    }
}
