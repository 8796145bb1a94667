//! Reading the JSON-lines events `bulwark run` writes, line by line: all of stdin, all of a
//! file, or a file followed as it grows (like `tail -F`: waiting for it to be created,
//! starting over when it is truncated or replaced, a partial last line held back until the
//! writer finishes it). `bulwark events` and `bulwark conns` read through here and differ only
//! in what they do with each line ([`LineSink`]).

use anyhow::Context;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// Whether to keep reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The reader's consumer is gone (`| head` closed the pipe): stop quietly.
    Stop,
}

/// What a reader does with the lines.
pub trait LineSink {
    /// One complete line, without its line end; `lineno` counts from 1.
    fn line(&mut self, line: &str, lineno: u64) -> anyhow::Result<Flow>;
    /// Everything written so far has been read (after each read that reached the end).
    fn caught_up(&mut self) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }
}

/// A reader's position in the stream: the partial line it holds and the lines it has read.
#[derive(Default)]
pub struct Cursor {
    pending: String,
    lineno: u64,
}

impl Cursor {
    /// Reads complete lines from `reader` to its end, handing each to `sink`. A partial last
    /// line stays pending (a writer may be mid-line) unless `eof_completes`.
    pub fn pump(
        &mut self,
        reader: &mut dyn BufRead,
        sink: &mut dyn LineSink,
        eof_completes: bool,
    ) -> anyhow::Result<Flow> {
        loop {
            let mut buf = Vec::new();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                if eof_completes && !self.pending.is_empty() && self.emit(sink)? == Flow::Stop {
                    return Ok(Flow::Stop);
                }
                return sink.caught_up();
            }
            self.pending.push_str(&String::from_utf8_lossy(&buf));
            if self.pending.ends_with('\n') && self.emit(sink)? == Flow::Stop {
                return Ok(Flow::Stop);
            }
        }
    }

    fn emit(&mut self, sink: &mut dyn LineSink) -> anyhow::Result<Flow> {
        self.lineno += 1;
        let line = std::mem::take(&mut self.pending);
        sink.line(line.trim_end_matches(['\n', '\r']), self.lineno)
    }

    /// Forgets a partial line (the file it came from was truncated or replaced).
    fn restart(&mut self) {
        self.pending.clear();
    }
}

/// All of stdin.
pub fn read_stdin(sink: &mut dyn LineSink) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    Cursor::default().pump(&mut stdin.lock(), sink, true)?;
    Ok(())
}

/// A file's lines; with `follow`, keeps reading as it grows (checking every `poll`) until
/// `stop()` is true or the sink stops. `who` prefixes the "waiting for the file" note.
pub fn read_file(
    path: &Path,
    follow: bool,
    poll: Duration,
    stop: &dyn Fn() -> bool,
    who: &str,
    sink: &mut dyn LineSink,
) -> anyhow::Result<()> {
    let open = |p: &Path| {
        std::fs::File::open(p).with_context(|| {
            format!(
                "cannot open events file {} (written by `bulwark run --events FILE`)",
                p.display()
            )
        })
    };
    let mut cursor = Cursor::default();
    if follow && !path.exists() {
        eprintln!("{who}: waiting for {} to be created", path.display());
        while !path.exists() {
            if stop() {
                return Ok(());
            }
            std::thread::sleep(poll);
        }
    }
    let mut file = BufReader::new(open(path)?);
    if cursor.pump(&mut file, sink, !follow)? == Flow::Stop || !follow {
        return Ok(());
    }
    let mut ino = file.get_ref().metadata()?.ino();
    while !stop() {
        std::thread::sleep(poll);
        let pos = file.stream_position()?;
        match std::fs::metadata(path) {
            // Replaced (rotated): read the new file from its start.
            Ok(m) if m.ino() != ino => {
                if let Ok(f) = std::fs::File::open(path) {
                    ino = m.ino();
                    file = BufReader::new(f);
                    cursor.restart();
                }
            }
            // Truncated: start over.
            Ok(m) if m.len() < pos => {
                file.seek(SeekFrom::Start(0))?;
                cursor.restart();
            }
            _ => {}
        }
        if cursor.pump(&mut file, sink, false)? == Flow::Stop {
            return Ok(());
        }
    }
    Ok(())
}

/// A writer whose bytes another thread can read while it is written to (tests of following).
#[cfg(test)]
#[derive(Clone, Default)]
pub struct SharedOut(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl SharedOut {
    /// Everything written so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

#[cfg(test)]
impl std::io::Write for SharedOut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
