//! The research-use notice: imports nothing, used by every output.

/// The research-use notice, in the one wording every output uses (reports, predictions, heat
/// maps, the web page, the API, the exported graphs' metadata).
pub const NOTICE: &str =
    "Research use only. artemis is not a medical device and must not be used for diagnosis.";
