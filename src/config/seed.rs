//! A source's `seed` key: a path (relative to the config file's directory,
//! or absolute) to a regular file holding one JSON document.

use std::path::PathBuf;

use super::Problem;
use super::check::Checker;
use super::raw::Field;

impl Checker<'_> {
    /// Checks `seed`: the file must exist, be a regular file within
    /// `max_output` bytes, and hold valid JSON. A seed that is not is kept
    /// (it may be fixed before it is needed) and reported by `config
    /// check` like an unset variable: it spares the rest of the config.
    pub fn seed(
        &mut self,
        scope: &str,
        field: &Field,
        max_output: usize,
    ) -> Result<Option<PathBuf>, ()> {
        let Some(field) = field else { return Ok(None) };
        let path = self.path(scope, "seed", field)?;
        let max = u64::try_from(max_output).unwrap_or(u64::MAX);
        if let Err(e) = crate::seed::read(&path, max) {
            self.unset.push(Problem {
                line: Some(self.line(field.span().start)),
                message: format!("{scope}: seed: {e}"),
            });
        }
        Ok(Some(path))
    }
}
