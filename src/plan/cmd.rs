//! `RemoteCmd`: a command as a value — a program and its argument vector.
//!
//! Commands are never shell strings. Builders validate every value that
//! comes from input before it lands in an argument; an argument that could
//! be read as an option is refused by the builder or placed after `--`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A command to run on a server: program plus argument vector, and
/// optionally bytes for its standard input.
///
/// `Debug` shows only the length of the stdin payload and `argv`/`Display`
/// never include it: the payload may hold secrets (env files), while the
/// argument vector is recorded in journals and plans.
#[derive(Clone, PartialEq, Eq)]
pub struct RemoteCmd {
    /// The program, a fixed name chosen by codeb (never input).
    pub program: &'static str,
    /// Arguments, passed one by one; each is quoted for the remote side by
    /// the executor, never interpreted by a shell built from strings.
    pub args: Vec<String>,
    /// Upper bound for this command; the executor wraps it in the remote
    /// `timeout` and also bounds the wait locally.
    pub timeout: Option<Duration>,
    /// Bytes written to the command's standard input, then closed; `None`
    /// gives the command an empty stdin. Shared, so cloning a plan does not
    /// copy payloads.
    pub stdin: Option<Arc<[u8]>>,
}

impl RemoteCmd {
    /// A command with no arguments yet.
    pub fn new(program: &'static str) -> Self {
        Self {
            program,
            args: Vec::new(),
            timeout: None,
            stdin: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, items: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(items.into_iter().map(Into::into));
        self
    }

    /// Sets the command's time limit.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// Sets the bytes piped to the command's standard input.
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(Arc::from(data.into()));
        self
    }

    /// Length of the stdin payload, if any (for logs and journals).
    pub fn stdin_len(&self) -> Option<usize> {
        self.stdin.as_ref().map(|d| d.len())
    }

    /// The argument vector including the program, as recorded in journals.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.to_string())
            .chain(self.args.iter().cloned())
            .collect()
    }
}

impl fmt::Debug for RemoteCmd {
    /// Like a derived `Debug`, except that the stdin payload appears only
    /// as its length.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteCmd")
            .field("program", &self.program)
            .field("args", &self.args)
            .field("timeout", &self.timeout)
            .field("stdin_len", &self.stdin_len())
            .finish()
    }
}

impl fmt::Display for RemoteCmd {
    /// A readable, unambiguous rendering for plans and journals (JSON-quoted
    /// arguments); never used to execute anything.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.program)?;
        for a in &self.args {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,{}@%".contains(&b))
            {
                write!(f, " {a}")?;
            } else {
                write!(f, " {}", serde_json::Value::String(a.clone()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_unusual_arguments() {
        let c = RemoteCmd::new("echo").arg("plain").arg("two words").arg("");
        assert_eq!(c.to_string(), r#"echo plain "two words" """#);
        assert_eq!(c.argv(), vec!["echo", "plain", "two words", ""]);
    }

    #[test]
    fn stdin_never_shows_in_debug_display_or_argv() {
        let secret = "DATABASE_URL=postgres://u:hunter2@db/x\n";
        let c = RemoteCmd::new("install").arg("/dev/stdin").stdin(secret);
        assert_eq!(c.stdin.as_deref(), Some(secret.as_bytes()));
        assert_eq!(c.stdin_len(), Some(secret.len()));
        for shown in [format!("{c:?}"), format!("{c:#?}"), c.to_string()] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert!(format!("{c:?}").contains(&format!("stdin_len: Some({})", secret.len())));
        assert_eq!(c.argv(), vec!["install", "/dev/stdin"]);
        assert_eq!(RemoteCmd::new("true").stdin_len(), None);
    }
}
