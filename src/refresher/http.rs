//! The `http` refresher: GET with conditional revalidation.

use std::fmt;

use super::{FetchContext, FetchError, Fetched};

/// A header value that may hold a secret: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for sending on the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An HTTP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// The URL to GET.
    pub url: String,
    /// Request headers; values already expanded from the environment.
    pub headers: Vec<(String, Secret)>,
    /// Most body bytes accepted; more is a failure.
    pub max_body: usize,
    /// Most redirects followed.
    pub max_redirects: u32,
}

/// Fetches the URL once.
///
/// # Errors
///
/// Not implemented yet.
pub async fn fetch(spec: &HttpSpec, ctx: &FetchContext) -> Result<Fetched, FetchError> {
    let _ = (spec, ctx);
    Err(FetchError::new("http refresher not implemented yet"))
}
