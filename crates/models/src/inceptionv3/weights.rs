//! Loading torchvision's ImageNet InceptionV3 checkpoint `inception_v3_google-0cc3c7bd.pth`
//! (or any file with torchvision's InceptionV3 names, `.pth` or `.safetensors`) into
//! [`InceptionV3`]. The module fields carry torchvision's names, so the only rules in
//! [`remap`] park what a new head does not use.

use super::InceptionV3;
use crate::ModelError;
use crate::weights::{Checkpoint, Hash, LoadPlan};
use std::path::Path;

/// torchvision's `Inception_V3_Weights.IMAGENET1K_V1` checkpoint. torchvision publishes only
/// the first eight hex digits of its SHA-256 (in the file name) and checks downloads against
/// them; so does artemis.
pub const CHECKPOINT: Checkpoint = Checkpoint {
    what: "torchvision InceptionV3 IMAGENET1K_V1",
    file_name: "inception_v3_google-0cc3c7bd.pth",
    hash: Hash::Sha256Prefix("0cc3c7bd"),
    how_to_get: "no package index reachable from artemis' setup ships this file: download \
        https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth on a machine with \
        internet access and pass it with --weights (or put it in the artemis cache's weights \
        folder); without it, train InceptionV3 from scratch (leave out --pretrained)",
};

/// `(checkpoint-name regex, replacement)` rules for a model with or without the auxiliary
/// classifier, keeping or leaving out the ImageNet classifiers.
pub fn remap(with_classifier: bool, with_aux: bool) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = Vec::new();
    if !with_aux {
        // The model has no auxiliary classifier: park the checkpoint's.
        r.push((r"^AuxLogits\.".into(), "imagenet_AuxLogits.".into()));
    }
    if !with_classifier {
        // A new head: park the ImageNet classifier (and the auxiliary one's linear layer).
        r.push((r"^fc\.".into(), "imagenet_fc.".into()));
        r.push((r"^AuxLogits\.fc\.".into(), "imagenet_AuxLogits_fc.".into()));
    }
    r
}

/// Loads a file with torchvision's InceptionV3 names into `model` without a hash check (a
/// converted checkpoint, or the test fixture's formula-filled tensors). The auxiliary
/// classifier may be absent from the file (it then keeps its initialisation).
pub fn load_tensors(
    model: InceptionV3,
    path: &Path,
    with_classifier: bool,
) -> Result<InceptionV3, ModelError> {
    let with_aux = model.AuxLogits.is_some();
    let mut may_be_missing = vec!["AuxLogits."];
    if !with_classifier {
        may_be_missing.push("fc.");
    }
    let plan = LoadPlan {
        rules: remap(with_classifier, with_aux),
        may_be_missing,
        unused_ok: vec!["imagenet_"],
    };
    crate::weights::load(model, path, &plan)
}

/// Loads the official checkpoint at `path` (hash-checked) into `model`.
pub fn load_torchvision(
    model: InceptionV3,
    path: &Path,
    with_classifier: bool,
) -> Result<InceptionV3, ModelError> {
    CHECKPOINT.verify(path)?;
    load_tensors(model, path, with_classifier)
}
