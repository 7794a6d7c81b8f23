//! `status --json` through the daemon, printed as the answer arrives: the
//! header fields first, then each source as it is read, so that the CLI
//! neither holds the whole answer (tens of MiB with 100,000 sources) nor
//! waits for its end before printing. The bytes are those of
//! [`super::output::print_status`] for the same [`StatusBody`].
//!
//! [`StatusBody`]: crate::protocol::StatusBody

use std::cell::RefCell;
use std::fmt;
use std::io::{self, BufRead, Write};

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{self, SerializeMap, SerializeSeq, Serializer};

use crate::client::{CallError, Client};
use crate::protocol::{DaemonStatus, ErrorCode, Request, SharedStatus, SourceStatus, WireError};

/// Asks the daemon for `status` and prints it to `out` as `status --json`
/// would print it.
///
/// # Errors
///
/// [`CallError::Daemon`] for an error answer, or for an answer that broke
/// off once printing had begun (so that the command does not go on to
/// print a second answer directly); [`CallError::Io`] when nothing was
/// printed yet.
pub fn status_json(client: &mut Client, out: &mut impl Write) -> Result<(), CallError> {
    let reader = client.send_request(Request::Status {})?;
    print_answer(reader, out)
}

/// Prints the `status` answer read from `reader`.
fn print_answer(reader: impl BufRead, out: &mut impl Write) -> Result<(), CallError> {
    let started = RefCell::new(false);
    let mut answer = serde_json::Deserializer::from_reader(reader);
    let visitor = Answer {
        out: &mut *out,
        started: &started,
    };
    match answer.deserialize_map(visitor) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CallError::Daemon(e)),
        Err(e) if *started.borrow() => {
            let msg = format!("the daemon's status answer broke off: {e}");
            Err(CallError::Daemon(WireError::new(ErrorCode::Internal, msg)))
        }
        Err(e) => Err(CallError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer: {e}"),
        ))),
    }
}

/// The answer object: `ok`, `id`, `error`, then the body's fields in the
/// order the daemon writes them.
struct Answer<'a, W> {
    out: &'a mut W,
    started: &'a RefCell<bool>,
}

impl<'de, W: Write> Visitor<'de> for Answer<'_, W> {
    type Value = Result<(), WireError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status answer")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut head = Head::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "error" => return Ok(Err(map.next_value()?)),
                "daemon" => head.daemon = map.next_value()?,
                "offline" => head.offline = map.next_value()?,
                "format" => head.format = map.next_value()?,
                "shared" => head.shared = map.next_value()?,
                "sources" => {
                    let print = Print {
                        head: &head,
                        out: &mut *self.out,
                        started: self.started,
                    };
                    map.next_value_seed(print)?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !*self.started.borrow() {
            let none: &[SourceStatus] = &[];
            print_body(&mut *self.out, &head, &none).map_err(de::Error::custom)?;
        }
        Ok(Ok(()))
    }
}

/// The fields that come before `sources`.
#[derive(Default)]
struct Head {
    daemon: Option<DaemonStatus>,
    offline: bool,
    format: u32,
    shared: Option<SharedStatus>,
}

/// Prints the whole body once `sources` begins: the head, then each source
/// as it is read.
struct Print<'a, W> {
    head: &'a Head,
    out: &'a mut W,
    started: &'a RefCell<bool>,
}

impl<'de, W: Write> DeserializeSeed<'de> for Print<'_, W> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, W: Write> Visitor<'de> for Print<'_, W> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of sources")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        *self.started.borrow_mut() = true;
        let sources = Sources {
            seq: RefCell::new(seq),
        };
        print_body(self.out, self.head, &sources).map_err(de::Error::custom)
    }
}

/// Prints the body as `serde_json::to_writer_pretty` prints a
/// [`crate::protocol::StatusBody`], and a newline.
fn print_body(out: &mut impl Write, head: &Head, sources: &impl Serialize) -> io::Result<()> {
    let mut ser = serde_json::Serializer::pretty(&mut *out);
    let mut body = ser.serialize_map(None)?;
    body.serialize_entry("daemon", &head.daemon)?;
    body.serialize_entry("offline", &head.offline)?;
    body.serialize_entry("format", &head.format)?;
    if let Some(shared) = &head.shared {
        body.serialize_entry("shared", shared)?;
    }
    body.serialize_entry("sources", sources)?;
    SerializeMap::end(body)?;
    writeln!(out)
}

/// The `sources` list, serialised as it is read.
struct Sources<A> {
    seq: RefCell<A>,
}

impl<'de, A: SeqAccess<'de>> Serialize for Sources<A> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut list = serializer.serialize_seq(None)?;
        let mut seq = self.seq.borrow_mut();
        while let Some(source) = seq
            .next_element::<SourceStatus>()
            .map_err(ser::Error::custom)?
        {
            list.serialize_element(&source)?;
        }
        list.end()
    }
}

#[cfg(test)]
mod tests;
