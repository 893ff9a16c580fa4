//! The feature cache: the fast path of transfer learning on a CPU.
//!
//! When the stages below `from` are frozen, their output for an image never changes, so it is
//! computed once (per augmentation copy) and the trainable stages train on it. A cache file
//! holds the activations that feed stage `from` for every image of one split and copy:
//!
//! ```text
//! "ARTFEAT1" | u64 LE header length | header JSON | f32 LE data ([n, c, h, w], row-major)
//! ```
//!
//! The header records the key and the BLAKE3 hash of the data. The key hashes everything the
//! activations depend on: the cache format, the model spec and split point, the weights' hash,
//! the preprocessing, the augmentation and its seed (for augmented copies), and every input
//! file's path, size and modification time. A file whose key differs is never read; one whose
//! data hash, length or header is wrong is reported and rebuilt. Files are written atomically.

use crate::dataset::{batch_tensor, batch_values, to_vec_f32};
use crate::error::{EngineError, Result};
use crate::onnx::OnnxModel;
use artemis_data::fsutil::write_atomic;
use artemis_data::transform::{Augment, Preprocess};
use artemis_models::{ModelSpec, Network, OnnxGraph};
use burn::prelude::*;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"ARTFEAT1";
/// Bumped whenever the meaning of cached activations changes.
const FORMAT: u32 = 1;

/// What the cached activations depend on.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureKey {
    pub model: ModelSpec,
    /// The stage the activations feed.
    pub from: usize,
    /// Hash of the frozen weights (the checkpoint file's sha256 for pretrained weights).
    pub weights: String,
    pub preprocess: Preprocess,
    /// Augmentation and the seed of this copy; `None` for the plain images.
    pub augment: Option<(Augment, u64)>,
    /// `(path, size, mtime ns)` of every input, in order.
    pub inputs: Vec<(PathBuf, u64, u128)>,
    /// What computed the activations (`burn`, `onnxruntime 1.32.0`): the engines agree to
    /// about 1e-5, not bit for bit, so a cache is only reused by the engine that wrote it.
    pub engine: String,
}

impl FeatureKey {
    /// Stats every input file (size and modification time are part of the key).
    pub fn inputs_of(paths: &[PathBuf]) -> Result<Vec<(PathBuf, u64, u128)>> {
        paths
            .iter()
            .map(|p| {
                let md = std::fs::metadata(p).map_err(|e| EngineError::io(p, e))?;
                let mtime = md
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                Ok((p.clone(), md.len(), mtime))
            })
            .collect()
    }

    /// Hex BLAKE3 of the key's canonical JSON.
    pub fn digest(&self) -> Result<String> {
        let json = serde_json::to_vec(&(FORMAT, self)).map_err(|e| EngineError::Json {
            path: PathBuf::from("<feature key>"),
            reason: e.to_string(),
        })?;
        Ok(blake3::hash(&json).to_hex().to_string())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Header {
    key: String,
    /// `[n, c, h, w]`.
    shape: [usize; 4],
    data_blake3: String,
}

/// Activations of `n` inputs, `[n, c, h, w]`.
#[derive(Debug, Clone)]
pub struct Features {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

impl Features {
    /// Values per input.
    pub fn row_len(&self) -> usize {
        self.shape[1] * self.shape[2] * self.shape[3]
    }

    /// The rows `idx` as a tensor `[idx.len(), c, h, w]`.
    pub fn batch(&self, idx: &[usize], device: &Device) -> Tensor<4> {
        let r = self.row_len();
        let mut v = Vec::with_capacity(r * idx.len());
        for &i in idx {
            v.extend_from_slice(&self.data[i * r..(i + 1) * r]);
        }
        let [_, c, h, w] = self.shape;
        Tensor::from_data(TensorData::new(v, [idx.len(), c, h, w]), device)
    }
}

/// How a cache lookup went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from a valid cache file.
    Hit,
    /// No file for this key: computed and written.
    Built,
    /// A file for this key was unreadable or corrupt: computed again and replaced.
    Rebuilt,
}

/// The file for `key`: the data is serialised once and hashed from those bytes.
fn encode(key: String, f: &Features) -> Result<Vec<u8>> {
    let data: Vec<u8> = f.data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = Header {
        key,
        shape: f.shape,
        data_blake3: blake3::hash(&data).to_hex().to_string(),
    };
    let h = serde_json::to_vec(&header).map_err(|e| EngineError::Json {
        path: PathBuf::from("<feature header>"),
        reason: e.to_string(),
    })?;
    let mut out = Vec::with_capacity(16 + h.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(h.len() as u64).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    Ok(out)
}

/// Reads and fully checks a cache file; `Err(reason)` if it cannot be used.
fn decode(bytes: &[u8], key: &str) -> std::result::Result<Features, String> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err("not an artemis feature cache (bad magic)".into());
    }
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[8..16]);
    let hlen = u64::from_le_bytes(len8) as usize;
    let body = bytes
        .get(16..16usize.saturating_add(hlen))
        .ok_or("header runs past the end of the file")?;
    let header: Header = serde_json::from_slice(body).map_err(|e| format!("bad header: {e}"))?;
    if header.key != key {
        return Err("key mismatch".into());
    }
    let data = &bytes[16 + hlen..];
    let n: usize = header.shape.iter().product();
    if data.len() != n * 4 {
        return Err(format!(
            "{} data bytes for shape {:?} (expected {})",
            data.len(),
            header.shape,
            n * 4
        ));
    }
    if blake3::hash(data).to_hex().as_str() != header.data_blake3 {
        return Err("data hash mismatch (corrupt or truncated)".into());
    }
    let data = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Features {
        shape: header.shape,
        data,
    })
}

/// Stages `0..from` of `model` as an ONNX graph in an ONNX Runtime session (in memory,
/// BatchNorm folded): what [`extract`] runs when the runtime is available.
pub fn stages_graph(
    model: &Network,
    spec: &ModelSpec,
    from: usize,
    threads: usize,
) -> Result<OnnxModel> {
    let bytes = model.to_onnx(spec, OnnxGraph::Stages(from), &[])?;
    OnnxModel::from_bytes(
        &bytes,
        threads,
        &format!(
            "{} stages 0..{from} (exported in memory)",
            spec.architecture.name()
        ),
    )
}

/// Computes the activations feeding stage `from` of `model` (inference mode) for `images`,
/// with `ort` (the graph of [`stages_graph`]) when given, else with burn on `device` (the
/// model's).
#[allow(clippy::too_many_arguments)]
pub fn extract(
    model: &Network,
    ort: Option<&OnnxModel>,
    from: usize,
    images: &[RgbImage],
    pre: &Preprocess,
    augment: Option<(&Augment, &[u64])>,
    batch: usize,
    what: &str,
    device: &Device,
) -> Result<Features> {
    let pb = crate::progress::bar(images.len() as u64, what);
    let mut data = Vec::new();
    let mut shape = [images.len(), 0, 0, 0];
    let batch = batch.max(1);
    for (b, chunk) in images.chunks(batch).enumerate() {
        let refs: Vec<&RgbImage> = chunk.iter().collect();
        let seeds = augment.map(|(a, s)| (a, &s[b * batch..b * batch + chunk.len()]));
        match ort {
            Some(m) => {
                let x = batch_values(&refs, pre, seeds);
                let input = [refs.len(), 3, pre.height as usize, pre.width as usize];
                let (dims, y) = m.run(&x, input, "activations")?;
                if let [_, c, h, w] = dims[..] {
                    shape = [images.len(), c, h, w];
                }
                data.extend(y);
            }
            None => {
                let x = batch_tensor(&refs, pre, seeds, device);
                let y = model.forward_stages(x, 0, from);
                let [_, c, h, w] = y.dims();
                shape = [images.len(), c, h, w];
                data.extend(to_vec_f32(y)?);
            }
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(Features { shape, data })
}

/// The cache file for `key` in `dir`.
pub fn cache_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.feat"))
}

/// Returns the activations for `key`, from `dir` when a valid file exists, else computed by
/// `compute` and stored.
pub fn cached(
    dir: &Path,
    key: &FeatureKey,
    compute: impl FnOnce() -> Result<Features>,
) -> Result<(Features, CacheOutcome)> {
    let digest = key.digest()?;
    let path = cache_path(dir, &digest);
    let mut outcome = CacheOutcome::Built;
    if path.exists() {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| decode(&b, &digest))
        {
            Ok(f) => return Ok((f, CacheOutcome::Hit)),
            Err(reason) => {
                tracing::warn!(
                    "{}: feature cache unusable ({reason}); rebuilding",
                    path.display()
                );
                outcome = CacheOutcome::Rebuilt;
            }
        }
    }
    let f = compute()?;
    write_atomic(&path, &encode(digest, &f)?)?;
    Ok((f, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tag: u64) -> FeatureKey {
        FeatureKey {
            model: ModelSpec::new(artemis_models::Architecture::MobileNetV2, 3, (32, 32)),
            from: 19,
            weights: "w".into(),
            preprocess: Preprocess {
                width: 32,
                height: 32,
                resize: artemis_data::image_io::ResizeMode::Squash,
                scaling: artemis_data::transform::Scaling::Unit,
                framing: Default::default(),
            },
            augment: None,
            inputs: vec![(PathBuf::from("a.png"), tag, 0)],
            engine: "burn".into(),
        }
    }

    fn feats() -> Features {
        Features {
            shape: [2, 3, 1, 1],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
        }
    }

    #[test]
    fn hit_then_corrupt_is_rebuilt_and_key_changes_miss() {
        let dir = tempfile::tempdir().unwrap();
        let k = key(1);
        let (_, o) = cached(dir.path(), &k, || Ok(feats())).unwrap();
        assert_eq!(o, CacheOutcome::Built);
        let (f, o) = cached(dir.path(), &k, || panic!("must not recompute")).unwrap();
        assert_eq!(o, CacheOutcome::Hit);
        assert_eq!(f.data, feats().data);
        assert_eq!(f.batch(&[1], &Device::flex()).dims(), [1, 3, 1, 1]);
        // Flip one data byte: the data hash catches it and the file is rebuilt.
        let p = cache_path(dir.path(), &k.digest().unwrap());
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        let (f, o) = cached(dir.path(), &k, || Ok(feats())).unwrap();
        assert_eq!(o, CacheOutcome::Rebuilt);
        assert_eq!(f.data, feats().data);
        // Truncated: rebuilt too.
        std::fs::write(&p, &bytes[..20]).unwrap();
        assert_eq!(
            cached(dir.path(), &k, || Ok(feats())).unwrap().1,
            CacheOutcome::Rebuilt
        );
        // Any change of the key (here an input's size) is a different file.
        assert_ne!(key(2).digest().unwrap(), k.digest().unwrap());
        let (_, o) = cached(dir.path(), &key(2), || Ok(feats())).unwrap();
        assert_eq!(o, CacheOutcome::Built);
        let mut k3 = key(1);
        k3.preprocess.scaling = artemis_data::transform::Scaling::Imagenet;
        assert_ne!(k3.digest().unwrap(), k.digest().unwrap());
    }
}
