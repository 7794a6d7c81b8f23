//! The hash of a source's definition: what it fetches and how (refresher
//! kind, URL as written, header names, argv, pty, file path). Header values
//! and the values of `${VAR}`s are never part of it, so a rotated key does
//! not change it and it reveals no secret.

use serde_json::json;
use sha2::{Digest, Sha256};

use super::raw::RawSource;
use crate::refresher::Refresher;

/// Hex SHA-256 of the canonical JSON of the definition of `raw`, checked
/// into `refresher`.
pub(super) fn hash(raw: &RawSource, refresher: &Refresher) -> String {
    let canonical = match refresher {
        Refresher::Command(spec) => json!({
            "kind": "command",
            "argv": spec.argv,
            "pty": spec.pty,
        }),
        Refresher::Http(spec) => {
            let http = raw.http.as_ref().map(toml::Spanned::get_ref);
            // The URL as written: `${VAR}` stays unexpanded.
            let written = http
                .and_then(|h| h.url.as_ref())
                .and_then(|u| u.get_ref().as_str().map(str::to_owned))
                .unwrap_or_else(|| spec.url.clone());
            let mut names: Vec<String> = spec
                .headers
                .iter()
                .map(|(name, _)| name.to_ascii_lowercase())
                .collect();
            names.sort();
            json!({ "kind": "http", "url": written, "headers": names })
        }
        Refresher::File(spec) => json!({
            "kind": "file",
            "path": spec.path.to_string_lossy(),
        }),
    };
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}
