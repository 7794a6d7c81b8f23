//! Payloads written by others: a fizeau commit, or one of ours whose
//! sidecar write was lost. The payload is the truth; the sidecar is made
//! to describe it under the next revision ([`refresh::payload_record`]).

use sha2::{Digest, Sha256};

use crate::error::Result;
use crate::layout::Layout;
use crate::meta::Meta;
use crate::refresh;
use crate::source::SourceId;
use crate::store;

/// Sets `meta`'s size and sha256 from the payload on disk; false when there
/// is none (or it cannot be read).
pub fn describe(layout: &Layout, id: &SourceId, meta: &mut Meta) -> bool {
    let path = layout.payload(id);
    let Ok(Some(bytes)) = store::read_optional(&path, "read payload") else {
        return false;
    };
    meta.bytes = Some(bytes.len() as u64);
    meta.sha256 = Some(hex::encode(Sha256::digest(&bytes)));
    true
}

/// Records a payload the sidecar does not describe, under the next
/// revision; `Ok(None)` when the sidecar describes it already, or there is
/// no payload, or no intact sidecar. The caller holds the source's flock.
///
/// # Errors
///
/// [`crate::Error::Io`] when the sidecar cannot be written.
pub fn adopt(layout: &Layout, id: &SourceId) -> Result<Option<u64>> {
    let sidecar = refresh::read_sidecar(layout, id);
    // A missing or damaged sidecar is left to the next refresh to rewrite.
    let Some(recorded) = sidecar.meta().map(|m| m.revision) else {
        return Ok(None);
    };
    let mut meta = refresh::payload_record(layout, id, sidecar);
    if recorded == meta.revision || !describe(layout, id, &mut meta) {
        return Ok(None);
    }
    let bytes = serde_json::to_vec_pretty(&meta).expect("sidecar serialises");
    store::write_advisory(&layout.sidecar(id), &Layout::temp_prefix(id), &bytes)?;
    Ok(Some(meta.revision))
}
