//! Pretrained checkpoints: where they live, how they are checked, and the one loader every
//! architecture uses.
//!
//! A checkpoint is read with its own tensor names (torchvision's, or the reference
//! implementation's); each architecture's `weights.rs` holds the renames from those names to
//! its module fields, one rule per line with its reason. burn-store's PyTorch adapter then
//! renames BatchNorm `weight`/`bias` to `gamma`/`beta` and transposes linear weights
//! (PyTorch stores `[out, in]`, burn `[in, out]`). `num_batches_tracked` has no counterpart
//! and is ignored.
//!
//! Formats: legacy and zip PyTorch pickles (`.pth`, `.pt`, read by burn-store's PyTorch
//! reader) and safetensors files with the same names (`.safetensors`).

use crate::ModelError;
use burn::module::Module;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The artemis cache folder: `$ARTEMIS_CACHE`, else `$XDG_CACHE_HOME/artemis`, else
/// `$HOME/.cache/artemis`, else `.cache/artemis`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ARTEMIS_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("artemis");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("artemis");
    }
    PathBuf::from(".cache").join("artemis")
}

/// How a checkpoint file is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// The whole SHA-256 (hex).
    Sha256(&'static str),
    /// The leading hex digits of the SHA-256, as torchvision's download check uses them (the
    /// part of the file name after the dash); the whole digest is not published.
    Sha256Prefix(&'static str),
}

/// A published pretrained checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// What it is, for messages ("torchvision MobileNetV2 IMAGENET1K_V1").
    pub what: &'static str,
    pub file_name: &'static str,
    pub hash: Hash,
    /// How to obtain it (shown with every missing/wrong-file error).
    pub how_to_get: &'static str,
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(format!("{:x}", Sha256::digest(&bytes)))
}

impl Checkpoint {
    /// Where `scripts/setup` puts it.
    pub fn default_path(&self) -> PathBuf {
        cache_dir().join("weights").join(self.file_name)
    }

    fn err(&self, path: &Path, reason: String) -> ModelError {
        ModelError::Weights {
            path: path.to_path_buf(),
            reason: format!("{reason}; {}", self.how_to_get),
        }
    }

    /// Checks that `path` is the genuine file; returns its whole SHA-256.
    pub fn verify(&self, path: &Path) -> Result<String, ModelError> {
        if !path.is_file() {
            return Err(self.err(
                path,
                format!("file not found (the {} checkpoint)", self.what),
            ));
        }
        let got = sha256_file(path).map_err(|e| self.err(path, format!("cannot read it ({e})")))?;
        let ok = match self.hash {
            Hash::Sha256(h) => got == h,
            Hash::Sha256Prefix(p) => got.starts_with(p),
        };
        if !ok {
            let expected = match self.hash {
                Hash::Sha256(h) => h.to_string(),
                Hash::Sha256Prefix(p) => format!("{p}..."),
            };
            return Err(self.err(
                path,
                format!(
                    "sha256 is {got}, expected {expected}: not the {} file {}",
                    self.what, self.file_name
                ),
            ));
        }
        Ok(got)
    }
}

/// How one architecture's checkpoint maps onto its module.
pub struct LoadPlan {
    /// `(checkpoint-name regex, replacement)` rules, applied in order to every name.
    pub rules: Vec<(String, String)>,
    /// Module tensors the checkpoint may lack (a new classifier head).
    pub may_be_missing: Vec<&'static str>,
    /// Checkpoint tensors that are read but deliberately not used (by prefix after the
    /// rules, e.g. a parked ImageNet classifier).
    pub unused_ok: Vec<&'static str>,
}

impl LoadPlan {
    /// The plan for an architecture whose classifier (module prefix `head`, e.g. `"fc."`)
    /// comes from the checkpoint only `with_classifier`; otherwise (transfer learning: a new
    /// head) the checkpoint's classifier is parked under `imagenet_<head>`, a name the model
    /// lacks, and the model keeps its own initialisation of `head`.
    pub fn with_head(
        mut rules: Vec<(String, String)>,
        head: &'static str,
        with_classifier: bool,
    ) -> Self {
        if !with_classifier {
            rules.push((
                format!("^{}", head.replace('.', r"\.")),
                format!("imagenet_{head}"),
            ));
        }
        LoadPlan {
            rules,
            may_be_missing: if with_classifier { vec![] } else { vec![head] },
            unused_ok: vec!["imagenet_"],
        }
    }
}

/// Loads the tensors of `path` (no hash check: see [`Checkpoint::verify`]) into `model`
/// through `plan`. Fails, naming the tensors, if any module tensor the plan requires is
/// missing, any shape disagrees, or the checkpoint holds tensors the model does not have.
pub fn load<M: Module>(mut model: M, path: &Path, plan: &LoadPlan) -> Result<M, ModelError> {
    let err = |reason: String| ModelError::Weights {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(err("file not found".into()));
    }
    let safetensors = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    // The same configuration for both readers: names as in the file (no renumbering of
    // indices), partial loads allowed (the checks below decide), then the plan's rules.
    macro_rules! apply {
        ($store:expr) => {{
            let mut store = $store.map_indices_contiguous(false).allow_partial(true);
            for (from, to) in &plan.rules {
                store = store.with_key_remapping(from, to);
            }
            model
                .load_from(&mut store)
                .map_err(|e| err(format!("cannot load: {e}")))?
        }};
    }
    let result = if safetensors {
        apply!(SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter))
    } else {
        apply!(PytorchStore::from_file(path))
    };
    if !result.errors.is_empty() {
        return Err(err(format!("tensors do not fit: {:?}", result.errors)));
    }
    let missing: Vec<&String> = result
        .missing
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !plan.may_be_missing.iter().any(|m| p.starts_with(m)))
        .collect();
    if !missing.is_empty() {
        return Err(err(format!("no tensor for {missing:?}")));
    }
    let unexpected: Vec<&String> = result
        .unused
        .iter()
        .filter(|p| {
            !p.ends_with("num_batches_tracked") && !plan.unused_ok.iter().any(|u| p.starts_with(u))
        })
        .collect();
    if !unexpected.is_empty() {
        return Err(err(format!(
            "tensors the model does not have: {unexpected:?}"
        )));
    }
    Ok(model)
}
