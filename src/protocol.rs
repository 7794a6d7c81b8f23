//! The daemon's socket protocol, version 1: wire types and framing.
//!
//! # Transport
//!
//! A Unix stream socket (mode 0600; peers with another uid, other than root,
//! are refused). Newline-delimited JSON: the client sends one request object
//! per line, the daemon answers each with one response object per line, in
//! order. A request line may not exceed [`MAX_LINE`] (64 KiB, `\r\n`
//! tolerated); a longer one is answered `too_large` and the connection is
//! closed. Any other bad line gets an error response and the connection stays
//! usable. Idle connections time out and the number of connections is capped
//! (`busy`). Responses have no size limit (a `get` carries a whole payload).
//!
//! # Requests
//!
//! `{"op": "<op>", "id": <any JSON>, ...fields}`. `id` is optional and echoed
//! as is in the response. Unknown fields are errors, and so is a key given
//! twice (`{"op":"hello","op":"prune"}` is `bad_request`). Sources are
//! `"tier/name"` strings, both parts matching `[a-z0-9][a-z0-9-]{0,62}`.
//! Optional fields may also be `null`.
//!
//! | op | fields | answer fields |
//! | --- | --- | --- |
//! | `hello` | | `protocol` (1), `version`, `root`, `config` (path or null), `format` (2), `shared`? |
//! | `get` | `source`; `refresh`?; `max_age_ms`?; `meta`? | see below |
//! | `refresh` | `sources` (non-empty list) or `all: true` | per-source outcome |
//! | `state` | `source` | the refresh state of the source |
//! | `status` | | the daemon, `shared`?, every source with freshness and state |
//! | `invalidate` | `source` | mark stale (soft purge), keep serving |
//! | `watch` | `sources`? (non-empty list; absent: all) | `{"ok": true}`, then events |
//! | `prune` | `dry_run`? (default false) | what was (or would be) removed |
//! | `stats` | | the daemon's counters, `shared`? |
//! | `metrics` | | Prometheus text in a string |
//! | `reload` | | reload the config |
//!
//! `get` options: `refresh` is one of `never`, `if_stale` (the default:
//! answer at once, start a background refresh when stale; the daemon keeps
//! sources warm so reads need not wait), `wait_if_stale` (refresh and wait
//! when stale or missing), `force` (refresh and wait); `max_age_ms`: data
//! older than this counts as stale even within its ttl; `meta: true` adds the
//! sidecar record under `meta`.
//!
//! Each op is one variant of [`Request`]; [`parse_request`] reads a line
//! into it with serde.
//!
//! # Responses
//!
//! Every response has `ok`. A failure is
//! `{"ok": false, "id": ..., "error": {"code": "...", "message": "..."}}`; a
//! success has `"ok": true` and the op's fields beside it. A `get` success
//! ([`GetBody`]): `data` (the payload's JSON embedded verbatim, line breaks
//! sent as spaces; absent when not served), `age_ms`, `fresh`, `stale`, `expired`, `revision`,
//! `fetched_at` (RFC 3339), `refresh` (refresh state), `meta` (if asked).
//! Every other op's body is a type too ([`StateBody`], [`RefreshBody`],
//! [`StatusBody`], [`InvalidateBody`], [`PruneBody`], [`WatchBody`],
//! [`MetricsBody`], [`ReloadBody`]); the [`Client`](crate::client::Client)
//! decodes them, and the CLI builds the same ones in direct mode.
//!
//! `shared` (in `hello`, `status` and `stats`; absent without `[shared]`
//! in the config, see [`SharedStatus`]): the shared tier as the daemon sees
//! it: `url` (password redacted), `up`, `epoch`, `last_error`, `commands`
//! (operations sent), `seeded` (local copies written after a new epoch).
//!
//! # Watch events
//!
//! After its `{"ok": true, ...}`, a `watch` connection receives one [`Event`]
//! line per change until the client closes:
//! `{"event": "committed" | "failed" | "removed" | "invalidated", "source":
//! "tier/name", "revision": n (committed), "error": "..." (failed), "at":
//! "<RFC 3339>"}`.
//!
//! # Error codes
//!
//! | code | meaning |
//! | --- | --- |
//! | `bad_request` | not UTF-8 or JSON, not an object, a key given twice, `op` or another field missing, a field unknown or mistyped |
//! | `unknown_op` | `op` is not an op of this protocol |
//! | `invalid_source` | a source name breaks the `tier/name` rule |
//! | `unknown_source` | a valid name that is not in the daemon's config |
//! | `no_data` | the source has no payload to serve |
//! | `refresh_failed` | the refresh run or joined failed (message: its error) |
//! | `timeout` | waiting for a refresh took longer than its deadline |
//! | `too_large` | request line over 64 KiB; the connection is closed |
//! | `busy` | a daemon limit was reached; retry later |
//! | `internal` | a fault inside the daemon |
//!
//! # Example
//!
//! ```text
//! > {"op":"get","id":1,"source":"discovery/openrouter","refresh":"never"}
//! < {"ok":true,"id":1,"data":{"models":[]},"age_ms":1200,"fresh":true,"stale":false,"expired":false,"revision":4,"fetched_at":"2026-01-02T03:04:05.678Z"}
//! > {"op":"get","source":"Discovery/x"}
//! < {"ok":false,"error":{"code":"invalid_source","message":"invalid source \"Discovery/x\": tier \"Discovery\" may contain only a-z, 0-9 and '-'"}}
//! ```

mod body;
mod error;
mod frame;
mod parse;
mod request;
mod response;
mod shared;

pub use body::{
    DaemonStatus, InvalidateBody, MetricsBody, PruneBody, RefreshBody, RefreshOutcome,
    RefreshResult, ReloadBody, Skipped, SourceStatus, StateBody, StatusBody, WatchBody,
};
pub use error::{ErrorCode, WireError};
pub use frame::{
    Line, read_line, read_line_blocking, read_line_max, to_line, write_json_line, write_response,
};
pub use parse::ops;
pub use request::{
    Envelope, GetRequest, RefreshMode, RefreshTarget, Rejected, Request, parse_request,
};
pub use response::{
    Event, EventKind, Fields, GetBody, HelloBody, Response, embed_payload, timestamp,
};
pub use shared::SharedStatus;

/// The protocol version `hello` reports.
pub const PROTOCOL_VERSION: u32 = 1;

/// The on-disk format version `hello` reports (see docs/FORMAT.md).
pub const FORMAT: u32 = crate::layout::FORMAT;

/// The longest request line accepted, in bytes, without its line ending.
pub const MAX_LINE: usize = 64 * 1024;
