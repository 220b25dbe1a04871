//! `RemoteCmd`: a command as a value — a program and its argument vector.
//!
//! Commands are never shell strings. Builders validate every value that
//! comes from input before it lands in an argument; an argument that could
//! be read as an option is refused by the builder or placed after `--`.

use std::fmt;
use std::time::Duration;

/// A command to run on a server: program plus argument vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCmd {
    /// The program, a fixed name chosen by codeb (never input).
    pub program: &'static str,
    /// Arguments, passed one by one; each is quoted for the remote side by
    /// the executor, never interpreted by a shell built from strings.
    pub args: Vec<String>,
    /// Upper bound for this command; the executor wraps it in the remote
    /// `timeout` and also bounds the wait locally.
    pub timeout: Option<Duration>,
}

impl RemoteCmd {
    /// A command with no arguments yet.
    pub fn new(program: &'static str) -> Self {
        Self {
            program,
            args: Vec::new(),
            timeout: None,
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

    /// The argument vector including the program, as recorded in journals.
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.to_string())
            .chain(self.args.iter().cloned())
            .collect()
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
}
