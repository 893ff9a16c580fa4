//! Finding the images of a data set and their labels from its folder layout.
//!
//! Two layouts are understood:
//! - `<root>/<split>/<class>/<image>` (e.g. `Training/glioma_tumor/x.jpg`), and
//! - `<root>/<class>/<image>`.
//!
//! The layout is decided by the names of the folders directly under `<root>`: if any of them is
//! a class name (see [`Label::from_class_dir`]) the root holds classes, otherwise it holds
//! splits. Inside a class folder, files are collected recursively; symbolic links to folders are
//! not followed (so a link loop cannot hang a scan), hidden files (`.name`) are ignored.

use crate::error::{DataError, Result};
use crate::labels::{Label, LabelMap, Resolved};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One image file of a data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Path on disk (root joined with `rel`).
    pub path: PathBuf,
    /// Path relative to the data-set root, `/`-separated; the sample's identity in manifests.
    pub rel: String,
    /// Split folder the file sits in (`Training`, `Testing`), if the layout has splits.
    pub split: Option<String>,
    /// Label taken from the class folder name.
    pub label: Label,
}

/// A file or folder that could not be taken into the scan, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(serialize_with = "crate::fsutil::lossy::path")]
    pub path: PathBuf,
    pub reason: String,
}

/// The result of scanning a data-set root.
#[derive(Debug, Clone, Serialize)]
pub struct Scan {
    pub root: PathBuf,
    /// Whether the root holds split folders (`<root>/<split>/<class>`).
    pub has_splits: bool,
    /// Number of class folders found.
    pub class_dirs: usize,
    /// Samples sorted by `rel`.
    pub samples: Vec<Sample>,
    /// Entries skipped: unknown folders, unreadable folders, names that are not UTF-8.
    pub problems: Vec<Problem>,
}

fn list_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut entries = Vec::new();
    for e in rd {
        entries.push(e.map_err(|e| DataError::io(dir, e))?);
    }
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn is_dir_no_follow(entry: &std::fs::DirEntry) -> bool {
    entry.file_type().map(|t| t.is_dir()).unwrap_or(false)
}

/// Scans a data-set root. Fails only when the root itself cannot be read or holds no class
/// folders at all; everything else that is wrong is recorded in [`Scan::problems`].
pub fn scan(root: &Path) -> Result<Scan> {
    scan_mapped(root, &LabelMap::default())
}

/// [`scan`] with class folder names resolved through a user's [`LabelMap`] first.
pub fn scan_mapped(root: &Path, map: &LabelMap) -> Result<Scan> {
    let top = list_dir(root)?;
    let top_dirs: Vec<_> = top.into_iter().filter(is_dir_no_follow).collect();
    let has_classes_at_top = top_dirs.iter().any(|e| {
        e.file_name()
            .to_str()
            .is_some_and(|n| map.resolve(n) != Resolved::Unknown)
    });
    let mut scan = Scan {
        root: root.to_path_buf(),
        has_splits: !has_classes_at_top,
        class_dirs: 0,
        samples: Vec::new(),
        problems: Vec::new(),
    };
    for entry in top_dirs {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            scan.problems.push(Problem {
                path,
                reason: "folder name is not UTF-8".into(),
            });
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if has_classes_at_top {
            scan_class_dir(&mut scan, map, &path, &name, None, &name);
        } else {
            let class_dirs = match list_dir(&path) {
                Ok(c) => c,
                Err(e) => {
                    scan.problems.push(Problem {
                        path,
                        reason: e.to_string(),
                    });
                    continue;
                }
            };
            for c in class_dirs.into_iter().filter(is_dir_no_follow) {
                let cpath = c.path();
                let Some(cname) = c.file_name().to_str().map(str::to_owned) else {
                    scan.problems.push(Problem {
                        path: cpath,
                        reason: "folder name is not UTF-8".into(),
                    });
                    continue;
                };
                if cname.starts_with('.') {
                    continue;
                }
                let rel = format!("{name}/{cname}");
                scan_class_dir(&mut scan, map, &cpath, &cname, Some(&name), &rel);
            }
        }
    }
    if scan.samples.is_empty() {
        return Err(DataError::Layout {
            path: root.to_path_buf(),
            reason: if scan.class_dirs > 0 {
                "no image files found under the class folders".into()
            } else {
                "no class folders found: expected <root>/<class>/<image> or \
                 <root>/<split>/<class>/<image> with class names such as glioma_tumor or \
                 glioma_coronal"
                    .into()
            },
        });
    }
    scan.samples.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(scan)
}

fn scan_class_dir(
    scan: &mut Scan,
    map: &LabelMap,
    dir: &Path,
    class: &str,
    split: Option<&str>,
    rel: &str,
) {
    let label = match map.resolve(class) {
        Resolved::Class(l) => l,
        Resolved::Ignored => {
            scan.problems.push(Problem {
                path: dir.to_path_buf(),
                reason: format!("class folder '{class}' ignored by the label map"),
            });
            return;
        }
        Resolved::Unknown => {
            scan.problems.push(Problem {
                path: dir.to_path_buf(),
                reason: format!("unknown class folder '{class}', skipped"),
            });
            return;
        }
    };
    scan.class_dirs += 1;
    let before = scan.samples.len();
    walk_files(scan, dir, rel, &mut |scan, path, rel| {
        scan.samples.push(Sample {
            path,
            rel,
            split: split.map(str::to_owned),
            label,
        })
    });
    if scan.samples.len() == before {
        scan.problems.push(Problem {
            path: dir.to_path_buf(),
            reason: "class folder holds no files".into(),
        });
    }
}

type OnFile<'a> = dyn FnMut(&mut Scan, PathBuf, String) + 'a;

fn walk_files(scan: &mut Scan, dir: &Path, rel: &str, on_file: &mut OnFile<'_>) {
    let entries = match list_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            scan.problems.push(Problem {
                path: dir.to_path_buf(),
                reason: e.to_string(),
            });
            return;
        }
    };
    for e in entries {
        let path = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_owned) else {
            scan.problems.push(Problem {
                path,
                reason: "file name is not UTF-8, skipped".into(),
            });
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if name.contains(['\t', '\n', '\r']) {
            scan.problems.push(Problem {
                path,
                reason: "file name contains a tab or line break, skipped".into(),
            });
            continue;
        }
        let child_rel = format!("{rel}/{name}");
        let Ok(ft) = e.file_type() else {
            scan.problems.push(Problem {
                path,
                reason: "cannot read file type".into(),
            });
            continue;
        };
        if ft.is_dir() {
            walk_files(scan, &path, &child_rel, on_file);
        } else if ft.is_symlink() {
            // Follow links to files only; a link to a folder could form a loop.
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => on_file(scan, path, child_rel),
                Ok(m) if m.is_dir() => scan.problems.push(Problem {
                    path,
                    reason: "symbolic link to a folder, not followed".into(),
                }),
                Ok(_) => scan.problems.push(Problem {
                    path,
                    reason: "symbolic link to a FIFO, socket or device, skipped".into(),
                }),
                Err(err) => scan.problems.push(Problem {
                    path,
                    reason: format!("broken symbolic link: {err}"),
                }),
            }
        } else if ft.is_file() {
            on_file(scan, path, child_rel);
        } else {
            scan.problems.push(Problem {
                path,
                reason: crate::fsutil::NOT_REGULAR_FILE.into(),
            });
        }
    }
}

/// Lists the files named by `inputs` (files, or folders walked recursively), sorted within each
/// folder. Used by predict and eval on folders outside a manifest.
pub fn list_inputs(inputs: &[PathBuf]) -> (Vec<PathBuf>, Vec<Problem>) {
    let mut scan = Scan {
        root: PathBuf::new(),
        has_splits: false,
        class_dirs: 0,
        samples: Vec::new(),
        problems: Vec::new(),
    };
    let mut files = Vec::new();
    for input in inputs {
        match std::fs::metadata(input) {
            Ok(m) if m.is_dir() => {
                let mut found = Vec::new();
                let problems_before = scan.problems.len();
                walk_files(&mut scan, input, "", &mut |_, p, _| found.push(p));
                if found.is_empty() && scan.problems.len() == problems_before {
                    // A folder named like a picture (`x.jpg/`) given by mistake, or an empty
                    // one: say so rather than finish with nothing done.
                    scan.problems.push(Problem {
                        path: input.clone(),
                        reason: "a folder holding no files to classify".into(),
                    });
                }
                files.extend(found);
            }
            Ok(m) if m.is_file() => files.push(input.clone()),
            Ok(_) => scan.problems.push(Problem {
                path: input.clone(),
                reason: crate::fsutil::NOT_REGULAR_FILE.into(),
            }),
            Err(e) => scan.problems.push(Problem {
                path: input.clone(),
                reason: e.to_string(),
            }),
        }
    }
    (files, scan.problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn split_layout() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("Training/glioma_tumor/a.jpg"));
        touch(&r.join("Training/no_tumor/b.jpg"));
        touch(&r.join("Testing/pituitary_tumor/c.jpg"));
        touch(&r.join("Testing/pituitary_tumor/.hidden"));
        touch(&r.join("Testing/unicorn/d.jpg"));
        let s = scan(r).unwrap();
        assert!(s.has_splits);
        let rels: Vec<_> = s.samples.iter().map(|x| x.rel.as_str()).collect();
        assert_eq!(
            rels,
            [
                "Testing/pituitary_tumor/c.jpg",
                "Training/glioma_tumor/a.jpg",
                "Training/no_tumor/b.jpg"
            ]
        );
        assert_eq!(s.samples[0].split.as_deref(), Some("Testing"));
        assert_eq!(s.problems.len(), 1);
        assert!(s.problems[0].reason.contains("unknown class folder"));
    }

    #[test]
    fn class_layout_with_nested_folders_and_link_loop() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        touch(&r.join("glioma_coronal/a.jpg"));
        touch(&r.join("no_sagittal/sub/b.jpg"));
        fs::create_dir_all(r.join("meningioma_transverse")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(r, r.join("no_sagittal/loop")).unwrap();
        let s = scan(r).unwrap();
        assert!(!s.has_splits);
        assert_eq!(s.samples.len(), 2);
        assert_eq!(s.samples[1].rel, "no_sagittal/sub/b.jpg");
        assert_eq!(s.samples[1].split, None);
        assert!(
            s.problems
                .iter()
                .any(|p| p.reason.contains("holds no files"))
        );
        #[cfg(unix)]
        assert!(s.problems.iter().any(|p| p.reason.contains("not followed")));
    }

    #[test]
    fn empty_root_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("cats")).unwrap();
        let e = scan(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no class folders"), "{e}");
    }
}
