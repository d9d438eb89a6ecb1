use std::io::{self, Write};

/// A value that crosses the process boundary as a temporary file: the host writes it,
/// only the file's absolute path travels in the call, and the worker reads the file.
/// The host removes the file once the call has ended.
///
/// This is the original's `FileBackedDTO` protocol, with the host (not the value)
/// owning the temporary file so that it can always be removed.
pub trait FileBacked: Send + Sync {
    /// Suffix of the temporary file's name (such as `.wav`), for plugins that look at
    /// extensions.
    fn file_suffix(&self) -> &str {
        ""
    }

    /// Write the value's bytes.
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()>;
}

impl FileBacked for Vec<u8> {
    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }
}

impl FileBacked for String {
    fn file_suffix(&self) -> &str {
        ".txt"
    }

    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.as_bytes())
    }
}

impl FileBacked for &'static str {
    fn file_suffix(&self) -> &str {
        ".txt"
    }

    fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self.as_bytes())
    }
}
