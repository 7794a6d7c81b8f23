//! The shared tier's state on the wire: the optional `shared` object of
//! `hello`, `status` and `stats`, absent when the config has no `[shared]`.

use serde::{Deserialize, Serialize};

/// The shared tier (Redis) as this daemon or process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedStatus {
    /// The server's URL, its password redacted.
    pub url: String,
    /// Whether the last operation reached the server.
    pub up: bool,
    /// The server's epoch seen last (a new one means a wiped or failed-over
    /// server); `None` before the first check.
    #[serde(default)]
    pub epoch: Option<String>,
    /// The last connection or command error, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Operations sent to the server.
    #[serde(default)]
    pub commands: u64,
    /// Local copies written to the shared tier after a new epoch.
    #[serde(default)]
    pub seeded: u64,
}

#[cfg(feature = "shared")]
impl From<crate::shared::TierStatus> for SharedStatus {
    fn from(s: crate::shared::TierStatus) -> Self {
        Self {
            url: s.url,
            up: s.up,
            epoch: s.epoch,
            last_error: s.last_error,
            commands: s.commands,
            seeded: s.seeded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_tier_says_so_and_why() {
        let status = SharedStatus {
            url: "redis://app:<redacted>@cache:6379/0".into(),
            up: false,
            epoch: None,
            last_error: Some("check epoch: connection refused".into()),
            commands: 3,
            seeded: 0,
        };
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["up"], false);
        assert_eq!(v["epoch"], serde_json::Value::Null);
        assert_eq!(v["last_error"], "check epoch: connection refused");
        let back: SharedStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, status);
    }
}
