//! Labels: tumor type, imaging plane, and the task that turns them into class indices.
//!
//! Class folder names of both layouts map onto the same labels:
//! - 4-class Kaggle layout: `glioma_tumor`, `meningioma_tumor`, `no_tumor`, `pituitary_tumor`
//!   (tumor type only, no plane);
//! - 12-class layout: `<type>_<plane>` with type in `glioma, meningioma, no, pituitary` and
//!   plane in `coronal, sagittal, transverse`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Tumor type, the first label axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TumorType {
    Glioma,
    Meningioma,
    NoTumor,
    Pituitary,
}

/// Imaging plane of the slice, the second label axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plane {
    Coronal,
    Sagittal,
    Transverse,
}

impl TumorType {
    pub const ALL: [TumorType; 4] = [
        TumorType::Glioma,
        TumorType::Meningioma,
        TumorType::NoTumor,
        TumorType::Pituitary,
    ];

    /// Canonical name (used in manifests and class lists).
    pub fn name(self) -> &'static str {
        match self {
            TumorType::Glioma => "glioma",
            TumorType::Meningioma => "meningioma",
            TumorType::NoTumor => "no_tumor",
            TumorType::Pituitary => "pituitary",
        }
    }

    /// Parses a canonical name, a 12-class type prefix (`no`) or a Kaggle folder name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "glioma" | "glioma_tumor" => Some(TumorType::Glioma),
            "meningioma" | "meningioma_tumor" => Some(TumorType::Meningioma),
            "no" | "no_tumor" | "notumor" => Some(TumorType::NoTumor),
            "pituitary" | "pituitary_tumor" => Some(TumorType::Pituitary),
            _ => None,
        }
    }
}

impl Plane {
    pub const ALL: [Plane; 3] = [Plane::Coronal, Plane::Sagittal, Plane::Transverse];

    pub fn name(self) -> &'static str {
        match self {
            Plane::Coronal => "coronal",
            Plane::Sagittal => "sagittal",
            Plane::Transverse => "transverse",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "coronal" => Some(Plane::Coronal),
            "sagittal" => Some(Plane::Sagittal),
            "transverse" | "axial" => Some(Plane::Transverse),
            _ => None,
        }
    }
}

/// The label of one image: its tumor type and, where the layout records it, its plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Label {
    pub tumor: TumorType,
    pub plane: Option<Plane>,
}

impl Label {
    /// Parses a class folder name of either layout (case-insensitive).
    ///
    /// ```
    /// use artemis_data::labels::{Label, Plane, TumorType};
    /// let l = Label::from_class_dir("no_sagittal").unwrap();
    /// assert_eq!((l.tumor, l.plane), (TumorType::NoTumor, Some(Plane::Sagittal)));
    /// let k = Label::from_class_dir("pituitary_tumor").unwrap();
    /// assert_eq!((k.tumor, k.plane), (TumorType::Pituitary, None));
    /// ```
    pub fn from_class_dir(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if let Some(tumor) = TumorType::parse(&lower) {
            return Some(Label { tumor, plane: None });
        }
        let (t, p) = lower.rsplit_once('_')?;
        Some(Label {
            tumor: TumorType::parse(t)?,
            plane: Some(Plane::parse(p)?),
        })
    }

    /// The name of the folder this label came from in the 12-class layout, or the type name.
    pub fn name(&self) -> String {
        match self.plane {
            Some(p) => format!("{}_{}", self.tumor.name(), p.name()),
            None => self.tumor.name().to_string(),
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A user's mapping from class folder names to labels, for folders whose names neither layout
/// uses (an external data set's own names).
///
/// File format: one rule a line, `folder<TAB>label` (a comma or spaces also separate), `#`
/// starts a comment. `label` is any class name [`Label::from_class_dir`] accepts (`glioma`,
/// `no_tumor`, `meningioma_sagittal`, ...) or `-` to ignore that folder. Folder names match
/// case-insensitively; a folder the map does not name falls back to the built-in names.
///
/// ```text
/// # BraTS-style export
/// Glioma-T1c      glioma
/// Normal          no_tumor
/// Pit_sag         pituitary_sagittal
/// scouts          -
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelMap {
    rules: std::collections::BTreeMap<String, Option<Label>>,
}

/// How a folder name resolves under a [`LabelMap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Class(Label),
    /// The map says to skip this folder.
    Ignored,
    Unknown,
}

impl LabelMap {
    /// Parses the text of a label-map file; errors name the line.
    pub fn parse(text: &str) -> std::result::Result<LabelMap, (usize, String)> {
        let mut rules = std::collections::BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line
                .split(|c: char| c == '\t' || c == ',' || c.is_whitespace())
                .filter(|p| !p.is_empty());
            let (Some(folder), Some(label), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err((i + 1, format!("expected `folder<TAB>label`, got '{line}'")));
            };
            let target = if label == "-" {
                None
            } else {
                Some(Label::from_class_dir(label).ok_or_else(|| {
                    (
                        i + 1,
                        format!(
                            "unknown label '{label}' (expected a type such as glioma or no_tumor, \
                             a type_plane name such as glioma_coronal, or -)"
                        ),
                    )
                })?)
            };
            if rules.insert(folder.to_ascii_lowercase(), target).is_some() {
                return Err((i + 1, format!("folder '{folder}' mapped twice")));
            }
        }
        Ok(LabelMap { rules })
    }

    /// Resolves a folder name: the map first, then the built-in layout names.
    pub fn resolve(&self, folder: &str) -> Resolved {
        match self.rules.get(&folder.to_ascii_lowercase()) {
            Some(Some(l)) => Resolved::Class(*l),
            Some(None) => Resolved::Ignored,
            None => match Label::from_class_dir(folder) {
                Some(l) => Resolved::Class(l),
                None => Resolved::Unknown,
            },
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What the network is asked to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// 12 classes: tumor type x plane (the reference task).
    #[default]
    TypePlane,
    /// 4 classes: tumor type.
    Type,
    /// 3 classes: imaging plane.
    Plane,
}

impl Task {
    pub fn name(self) -> &'static str {
        match self {
            Task::TypePlane => "type-plane",
            Task::Type => "type",
            Task::Plane => "plane",
        }
    }

    /// Class names in class-index order.
    pub fn classes(self) -> Vec<String> {
        match self {
            Task::TypePlane => TumorType::ALL
                .iter()
                .flat_map(|t| {
                    Plane::ALL
                        .iter()
                        .map(move |p| format!("{}_{}", t.name(), p.name()))
                })
                .collect(),
            Task::Type => TumorType::ALL
                .iter()
                .map(|t| t.name().to_string())
                .collect(),
            Task::Plane => Plane::ALL.iter().map(|p| p.name().to_string()).collect(),
        }
    }

    pub fn num_classes(self) -> usize {
        match self {
            Task::TypePlane => 12,
            Task::Type => 4,
            Task::Plane => 3,
        }
    }

    /// Class index of a label under this task; `None` when the label lacks what the task
    /// needs (a plane, for the 4-class Kaggle layout).
    pub fn class_of(self, label: &Label) -> Option<usize> {
        let t = TumorType::ALL.iter().position(|x| *x == label.tumor)?;
        match self {
            Task::Type => Some(t),
            Task::Plane => Plane::ALL.iter().position(|x| Some(*x) == label.plane),
            Task::TypePlane => {
                let p = Plane::ALL.iter().position(|x| Some(*x) == label.plane)?;
                Some(t * 3 + p)
            }
        }
    }

    /// For a 12-class index, the 4-class (type) index.
    pub fn type_of_type_plane(class: usize) -> usize {
        class / 3
    }

    /// For a 12-class index, the 3-class (plane) index.
    pub fn plane_of_type_plane(class: usize) -> usize {
        class % 3
    }
}

impl FromStr for Task {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "type-plane" => Ok(Task::TypePlane),
            "type" => Ok(Task::Type),
            "plane" => Ok(Task::Plane),
            other => Err(format!(
                "unknown task '{other}' (expected type-plane, type or plane)"
            )),
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_map_to_the_same_type() {
        for (kaggle, planes) in [
            ("glioma_tumor", "glioma_coronal"),
            ("meningioma_tumor", "meningioma_sagittal"),
            ("no_tumor", "no_transverse"),
            ("pituitary_tumor", "pituitary_coronal"),
        ] {
            let a = Label::from_class_dir(kaggle).unwrap();
            let b = Label::from_class_dir(planes).unwrap();
            assert_eq!(a.tumor, b.tumor, "{kaggle} vs {planes}");
            assert_eq!(a.plane, None);
            assert!(b.plane.is_some());
        }
        assert!(Label::from_class_dir("cat").is_none());
        assert!(Label::from_class_dir("glioma_diagonal").is_none());
    }

    #[test]
    fn label_maps_parse_resolve_and_report_bad_lines() {
        let m = LabelMap::parse(
            "# comment\nGlioma-T1c\tglioma\nNormal, no_tumor\nPit_sag  pituitary_sagittal\nscouts -\n",
        )
        .unwrap();
        let l = |s: &str| Label::from_class_dir(s).unwrap();
        assert_eq!(m.resolve("glioma-t1c"), Resolved::Class(l("glioma")));
        assert_eq!(m.resolve("NORMAL"), Resolved::Class(l("no_tumor")));
        assert_eq!(
            m.resolve("Pit_sag"),
            Resolved::Class(l("pituitary_sagittal"))
        );
        assert_eq!(m.resolve("scouts"), Resolved::Ignored);
        // Built-in names still work; others are unknown.
        assert_eq!(
            m.resolve("meningioma_tumor"),
            Resolved::Class(l("meningioma"))
        );
        assert_eq!(m.resolve("cats"), Resolved::Unknown);
        assert_eq!(LabelMap::parse("a glioma\nb kitten\n").unwrap_err().0, 2);
        assert_eq!(LabelMap::parse("a\n").unwrap_err().0, 1);
        assert_eq!(LabelMap::parse("a glioma\nA no\n").unwrap_err().0, 2);
    }

    #[test]
    fn task_class_indices() {
        let l = Label::from_class_dir("meningioma_transverse").unwrap();
        assert_eq!(Task::TypePlane.class_of(&l), Some(5));
        assert_eq!(Task::Type.class_of(&l), Some(1));
        assert_eq!(Task::Plane.class_of(&l), Some(2));
        assert_eq!(Task::TypePlane.classes()[5], "meningioma_transverse");
        assert_eq!(Task::type_of_type_plane(5), 1);
        assert_eq!(Task::plane_of_type_plane(5), 2);
        let k = Label::from_class_dir("no_tumor").unwrap();
        assert_eq!(Task::Type.class_of(&k), Some(2));
        assert_eq!(Task::TypePlane.class_of(&k), None);
        assert_eq!(Task::Plane.class_of(&k), None);
        for task in [Task::TypePlane, Task::Type, Task::Plane] {
            assert_eq!(task.classes().len(), task.num_classes());
            assert_eq!(task.name().parse::<Task>().unwrap(), task);
        }
    }
}
