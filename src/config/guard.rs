//! The `guard = { min_bytes = ..., max_shrink = ... }` key of `[defaults]`
//! and `[[source]]`: each key given overrides the one below it.

use toml::Value;

use super::check::Checker;
use super::raw::Field;
use crate::source::Guard;

/// What `guard` takes, for error messages.
const GUARD_HINT: &str = "expected a table like { min_bytes = 2, max_shrink = 0.9 } (min_bytes: a byte count; \
     max_shrink: a fraction from 0 to 1 of the current payload a refresh may lose)";

impl Checker<'_> {
    /// Resolves `guard` over `base`; `Err(())` when reported bad.
    pub fn guard(&mut self, scope: &str, field: &Field, base: Guard) -> Result<Guard, ()> {
        let Some(field) = field else { return Ok(base) };
        let Value::Table(table) = field.get_ref() else {
            let msg = format!("guard {}: {GUARD_HINT}", field.get_ref());
            return self.bad(field, scope, msg);
        };
        let mut guard = base;
        let mut problems = Vec::new();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("min_bytes", Value::Integer(n)) if *n >= 0 => {
                    guard.min_bytes = u64::try_from(*n).unwrap_or(0);
                }
                ("max_shrink", v) => match fraction(v) {
                    Some(x) => guard.max_shrink = x,
                    None => problems.push(format!(
                        "guard.max_shrink {v}: expected a fraction from 0 to 1 (e.g. 0.9: \
                         refuse a payload under a tenth of the current one; 1: any shrink)"
                    )),
                },
                ("min_bytes", v) => problems.push(format!(
                    "guard.min_bytes {v}: expected a whole number of bytes, 0 or more"
                )),
                (other, _) => problems.push(format!(
                    "guard: unknown key `{other}`, expected `min_bytes` or `max_shrink`"
                )),
            }
        }
        if problems.is_empty() {
            return Ok(guard);
        }
        for problem in problems {
            self.report(&field.span(), scope, problem);
        }
        Err(())
    }
}

/// A number from 0 to 1.
fn fraction(value: &Value) -> Option<f64> {
    let x = match value {
        Value::Float(x) => *x,
        Value::Integer(n @ 0..=1) => *n as f64,
        _ => return None,
    };
    (0.0..=1.0).contains(&x).then_some(x)
}
