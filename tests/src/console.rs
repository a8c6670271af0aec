//! A serial console: a reader thread copies the guest's output into a shared
//! buffer, and tests wait for lines on it.
//!
//! The buffer keeps two views: the raw bytes (what the guest really sent, for
//! logs) and a text view with ANSI escape sequences and control characters
//! removed, split into lines (what tests match against). Both a lone `\r` and
//! `\n` end a line, `\r\n` counts once: TUIs redraw a line with `\r` + "erase
//! line", and each redraw then becomes its own line to match.
//!
//! Each `Console` handle has a cursor. A wait only looks at text after the
//! cursor and, on success, moves the cursor to the end of the match, so
//! successive waits walk forward through the output and never see the same
//! text twice.
//!
//! The last line may still be incomplete (a prompt waits for input without a
//! newline). It is matched only once the stream has been quiet for
//! [`PARTIAL_LINE_QUIET`], so a pattern like `exit code \d+` is not matched
//! against half a line that is still arriving.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use regex::bytes::Regex as BytesRegex;

/// How long the stream must be quiet before an unterminated last line is matched.
pub const PARTIAL_LINE_QUIET: Duration = Duration::from_millis(200);

/// How many lines of output an error message carries.
pub const ERROR_TAIL_LINES: usize = 40;

/// Errors from waiting on or writing to a console.
///
/// `Debug` prints the same as `Display`: tests `.unwrap()` these, and the
/// console tail must show as lines, not as one escaped string.
#[derive(thiserror::Error)]
pub enum ConsoleError {
    #[error(
        "timed out after {timeout:?} waiting for {pattern} on the console; last {ERROR_TAIL_LINES} lines:\n{tail}"
    )]
    Timeout {
        pattern: String,
        timeout: Duration,
        tail: String,
    },
    #[error(
        "console closed ({reason}) while waiting for {pattern}; last {ERROR_TAIL_LINES} lines:\n{tail}"
    )]
    Closed {
        pattern: String,
        reason: String,
        tail: String,
    },
    #[error("this console is read-only (serial on a pipe without stdin, or a fake stream)")]
    NotWritable,
    #[error("writing to the console: {0}")]
    Write(#[source] std::io::Error),
    #[error("invalid pattern: {0}")]
    Pattern(#[from] regex::Error),
}

impl fmt::Debug for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What to wait for: a literal substring or a regular expression.
///
/// `&str` and `String` convert to a literal; `regex::Regex` and
/// `regex::bytes::Regex` convert to a regex. Use [`Pattern::regex`] to build a
/// regex from a string.
#[derive(Debug, Clone)]
pub struct Pattern {
    re: BytesRegex,
    description: String,
}

impl Pattern {
    /// A literal substring.
    pub fn literal(text: &str) -> Pattern {
        Pattern {
            re: BytesRegex::new(&regex::escape(text)).expect("an escaped literal is a valid regex"),
            description: format!("{text:?}"),
        }
    }

    /// A regular expression (`regex` crate syntax), matched within one line.
    pub fn regex(re: &str) -> Result<Pattern, ConsoleError> {
        Ok(Pattern {
            re: BytesRegex::new(re)?,
            description: format!("/{re}/"),
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Pattern {
        Pattern::literal(s)
    }
}

impl From<&String> for Pattern {
    fn from(s: &String) -> Pattern {
        Pattern::literal(s)
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Pattern {
        Pattern::literal(&s)
    }
}

impl From<&Pattern> for Pattern {
    fn from(p: &Pattern) -> Pattern {
        p.clone()
    }
}

impl From<regex::Regex> for Pattern {
    fn from(re: regex::Regex) -> Pattern {
        Pattern::from(&re)
    }
}

impl From<&regex::Regex> for Pattern {
    fn from(re: &regex::Regex) -> Pattern {
        // A `regex::Regex` that compiled also compiles as a bytes regex, with the
        // same (Unicode) semantics on UTF-8 input.
        Pattern::regex(re.as_str()).expect("a valid regex is a valid bytes regex")
    }
}

impl From<BytesRegex> for Pattern {
    fn from(re: BytesRegex) -> Pattern {
        let description = format!("/{}/", re.as_str());
        Pattern { re, description }
    }
}

/// A successful wait: the line that matched and what in it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The whole line (ANSI-stripped) the match was found in.
    pub line: String,
    /// The text the pattern matched.
    pub text: String,
    /// Capture groups; index 0 is the whole match, `None` for a group that did not take part.
    pub groups: Vec<Option<String>>,
    /// For `wait_for_any`: the index of the pattern that matched (0 for `wait_for`).
    pub pattern_index: usize,
}

impl Match {
    /// Capture group `i` (0 = whole match), if it took part in the match.
    pub fn group(&self, i: usize) -> Option<&str> {
        self.groups.get(i).and_then(|g| g.as_deref())
    }
}

/// A serial console being read by a background thread. Cheap to clone: a
/// clone shares the output but gets its own cursor (starting where the
/// original's is).
pub struct Console {
    shared: Arc<Shared>,
    cursor: Mutex<usize>,
    writer: Option<Arc<Mutex<Box<dyn Write + Send>>>>,
}

impl Clone for Console {
    fn clone(&self) -> Console {
        Console {
            shared: Arc::clone(&self.shared),
            cursor: Mutex::new(*lock(&self.cursor)),
            writer: self.writer.clone(),
        }
    }
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = lock(&self.shared.buf);
        f.debug_struct("Console")
            .field("bytes", &buf.raw.len())
            .field("cursor", &*lock(&self.cursor))
            .field("closed", &buf.closed)
            .field("writable", &self.writer.is_some())
            .finish()
    }
}

impl Console {
    /// A read-only console over `reader` (e.g. QEMU's stdout, or a test pipe).
    pub fn from_reader(reader: impl Read + Send + 'static) -> Console {
        Console::start(Box::new(reader), None, None)
    }

    /// A console that can also be written to (`send`), e.g. a unix socket.
    pub fn from_stream(
        reader: impl Read + Send + 'static,
        writer: impl Write + Send + 'static,
    ) -> Console {
        Console::start(Box::new(reader), Some(Box::new(writer)), None)
    }

    /// The general constructor: `log`, if given, receives every raw byte as it
    /// arrives, so the log survives even if the test process is killed.
    pub fn start(
        mut reader: Box<dyn Read + Send>,
        writer: Option<Box<dyn Write + Send>>,
        mut log: Option<File>,
    ) -> Console {
        let shared = Arc::new(Shared {
            buf: Mutex::new(Buffer::new()),
            cond: Condvar::new(),
        });
        let thread_shared = Arc::clone(&shared);
        // The thread ends when the stream does (QEMU exited or was killed, the
        // test closed its end); it is detached because it may block in read().
        thread::Builder::new()
            .name("console-reader".into())
            .spawn(move || {
                let mut chunk = [0u8; 8192];
                let reason = loop {
                    match reader.read(&mut chunk) {
                        Ok(0) => break "end of stream".to_string(),
                        Ok(n) => {
                            if let Some(f) = log.as_mut() {
                                // A log write failure must not stop the test reading the console.
                                let _ = f.write_all(&chunk[..n]);
                            }
                            lock(&thread_shared.buf).push(&chunk[..n]);
                            thread_shared.cond.notify_all();
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => break format!("read error: {e}"),
                    }
                };
                if let Some(f) = log.as_mut() {
                    let _ = f.flush();
                }
                lock(&thread_shared.buf).closed = Some(reason);
                thread_shared.cond.notify_all();
            })
            .expect("spawning the console reader thread");
        Console {
            shared,
            cursor: Mutex::new(0),
            writer: writer.map(|w| Arc::new(Mutex::new(w))),
        }
    }

    /// Waits for the first line after the cursor that matches `pattern` and
    /// moves the cursor past the match.
    pub fn wait_for(
        &self,
        pattern: impl Into<Pattern>,
        timeout: Duration,
    ) -> Result<Match, ConsoleError> {
        self.wait_any_inner(&[pattern.into()], timeout)
    }

    /// Waits until any of `patterns` matches; `Match::pattern_index` says which.
    /// If several match, the earliest position in the output wins.
    pub fn wait_for_any<P>(&self, patterns: &[P], timeout: Duration) -> Result<Match, ConsoleError>
    where
        P: Clone + Into<Pattern>,
    {
        let patterns: Vec<Pattern> = patterns.iter().cloned().map(Into::into).collect();
        self.wait_any_inner(&patterns, timeout)
    }

    fn wait_any_inner(
        &self,
        patterns: &[Pattern],
        timeout: Duration,
    ) -> Result<Match, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let mut cursor = lock(&self.cursor);
        let mut buf = lock(&self.shared.buf);
        // Complete lines before `scan_from` were already tried in this wait.
        let mut scan_from = *cursor;
        loop {
            let partial_ok = buf.closed.is_some() || buf.last_data.elapsed() >= PARTIAL_LINE_QUIET;
            if let Some((end, m)) = buf.search(patterns, &mut scan_from, partial_ok) {
                *cursor = end;
                return Ok(m);
            }
            let describe = || describe_patterns(patterns);
            if let Some(reason) = &buf.closed {
                return Err(ConsoleError::Closed {
                    pattern: describe(),
                    reason: reason.clone(),
                    tail: buf.tail(ERROR_TAIL_LINES),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ConsoleError::Timeout {
                    pattern: describe(),
                    timeout,
                    tail: buf.tail(ERROR_TAIL_LINES),
                });
            }
            // Wake at least every PARTIAL_LINE_QUIET: a prompt without a newline
            // becomes matchable by the passing of time, not by new data.
            let wait = (deadline - now).min(PARTIAL_LINE_QUIET);
            buf = self
                .shared
                .cond
                .wait_timeout(buf, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Writes bytes to the guest (keys for a TUI, a shell command). An escape
    /// sequence must go in one call or the guest may read it as separate keys.
    pub fn send(&self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let writer = self.writer.as_ref().ok_or(ConsoleError::NotWritable)?;
        let mut w = lock(writer);
        w.write_all(bytes).map_err(ConsoleError::Write)?;
        w.flush().map_err(ConsoleError::Write)
    }

    /// Sends `text` followed by Enter (`\r`, what a terminal sends).
    pub fn send_line(&self, text: &str) -> Result<(), ConsoleError> {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(b'\r');
        self.send(&bytes)
    }

    /// Whether `send` can work on this console.
    pub fn is_writable(&self) -> bool {
        self.writer.is_some()
    }

    /// All text so far (ANSI-stripped, lines joined with `\n`).
    pub fn contents(&self) -> String {
        String::from_utf8_lossy(&lock(&self.shared.buf).text).into_owned()
    }

    /// All raw bytes so far, escapes included.
    pub fn raw(&self) -> Vec<u8> {
        lock(&self.shared.buf).raw.clone()
    }

    /// The last `n` lines (ANSI-stripped), for diagnostics.
    pub fn tail(&self, n: usize) -> String {
        lock(&self.shared.buf).tail(n)
    }

    /// Moves the cursor to the end of the output so far: later waits only see
    /// new output (e.g. after sending a command, ignore its echo's prehistory).
    pub fn skip_to_end(&self) {
        let end = lock(&self.shared.buf).text.len();
        *lock(&self.cursor) = end;
    }

    /// The cursor, as an offset into [`Console::contents`].
    pub fn position(&self) -> usize {
        *lock(&self.cursor)
    }

    /// Why the stream ended, once it has.
    pub fn closed_reason(&self) -> Option<String> {
        lock(&self.shared.buf).closed.clone()
    }

    /// Waits up to `timeout` for the stream to end; true if it did. Used after
    /// QEMU exits so the last bytes it wrote are in the buffer before a test
    /// looks at them.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = lock(&self.shared.buf);
        while buf.closed.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            buf = self
                .shared
                .cond
                .wait_timeout(buf, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn describe_patterns(patterns: &[Pattern]) -> String {
    patterns
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Locks, ignoring poisoning: a panicking test thread must not make the
/// console (and with it the failure diagnostics) unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    buf: Mutex<Buffer>,
    cond: Condvar,
}

struct Buffer {
    raw: Vec<u8>,
    /// ANSI-stripped text; `\n` ends a line.
    text: Vec<u8>,
    /// Offset in `text` where each line starts; always starts with 0, and the
    /// last entry is the (possibly empty) line still being written.
    line_starts: Vec<usize>,
    strip: Stripper,
    last_data: Instant,
    closed: Option<String>,
}

impl Buffer {
    fn new() -> Buffer {
        Buffer {
            raw: Vec::new(),
            text: Vec::new(),
            line_starts: vec![0],
            strip: Stripper::default(),
            last_data: Instant::now(),
            closed: None,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        self.last_data = Instant::now();
        for &b in bytes {
            match self.strip.feed(b) {
                Out::Nothing => {}
                Out::Byte(c) => self.text.push(c),
                Out::Newline => {
                    self.text.push(b'\n');
                    self.line_starts.push(self.text.len());
                }
            }
        }
    }

    /// Finds the earliest match at or after `*scan_from`. Advances `*scan_from`
    /// past complete lines that did not match, so a long wait does not rescan
    /// them. Returns the new cursor (end of the match) and the match.
    fn search(
        &self,
        patterns: &[Pattern],
        scan_from: &mut usize,
        partial_ok: bool,
    ) -> Option<(usize, Match)> {
        let first = self.line_starts.partition_point(|&s| s <= *scan_from) - 1;
        for i in first..self.line_starts.len() {
            let start = self.line_starts[i];
            let complete = i + 1 < self.line_starts.len();
            let end = if complete {
                self.line_starts[i + 1] - 1 // without the '\n'
            } else {
                self.text.len()
            };
            if !complete && !partial_ok {
                return None;
            }
            let line = &self.text[start..end];
            let from = (*scan_from).max(start) - start;
            let mut best: Option<(usize, regex::bytes::Captures<'_>)> = None;
            for (pi, p) in patterns.iter().enumerate() {
                if let Some(caps) = p.re.captures_at(line, from) {
                    let pos = caps.get(0).map_or(usize::MAX, |m| m.start());
                    let better = match &best {
                        None => true,
                        Some((_, b)) => pos < b.get(0).map_or(usize::MAX, |m| m.start()),
                    };
                    if better {
                        best = Some((pi, caps));
                    }
                }
            }
            if let Some((pi, caps)) = best {
                let whole = caps.get(0).expect("group 0 always participates");
                let m = Match {
                    line: lossy(line),
                    text: lossy(whole.as_bytes()),
                    groups: caps
                        .iter()
                        .map(|g| g.map(|g| lossy(g.as_bytes())))
                        .collect(),
                    pattern_index: pi,
                };
                return Some((start + whole.end(), m));
            }
            if complete {
                *scan_from = self.line_starts[i + 1];
            }
        }
        None
    }

    fn tail(&self, n: usize) -> String {
        let mut lines: Vec<&[u8]> = self.text.split(|&b| b == b'\n').collect();
        if lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        let skip = lines.len().saturating_sub(n);
        lines[skip..]
            .iter()
            .map(|l| lossy(l))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What one input byte contributes to the text view.
enum Out {
    Nothing,
    Byte(u8),
    Newline,
}

/// A byte-at-a-time ANSI/VT100 escape stripper (state survives chunk
/// boundaries, since reads can split a sequence anywhere).
#[derive(Default)]
struct Stripper {
    state: EscState,
    /// The previous byte was `\r`: a following `\n` is the same line end.
    after_cr: bool,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum EscState {
    #[default]
    Normal,
    /// After ESC.
    Esc,
    /// ESC followed by intermediate bytes (e.g. `ESC ( B`, charset selection).
    EscIntermediate,
    /// Control sequence `ESC [ params final`.
    Csi,
    /// String sequences (OSC `ESC ]`, DCS `ESC P`, ...) ending in BEL or `ESC \`.
    Str,
    /// ESC inside a string sequence: `\` ends it.
    StrEsc,
}

impl Stripper {
    fn feed(&mut self, b: u8) -> Out {
        let after_cr = std::mem::replace(&mut self.after_cr, false);
        match self.state {
            EscState::Normal => match b {
                0x1b => {
                    self.state = EscState::Esc;
                    Out::Nothing
                }
                b'\n' if after_cr => Out::Nothing,
                b'\n' => Out::Newline,
                b'\r' => {
                    self.after_cr = true;
                    Out::Newline
                }
                b'\t' => Out::Byte(b),
                0..=0x1f | 0x7f => Out::Nothing,
                _ => Out::Byte(b),
            },
            EscState::Esc => {
                self.state = match b {
                    b'[' => EscState::Csi,
                    b']' | b'P' | b'X' | b'^' | b'_' => EscState::Str,
                    0x20..=0x2f => EscState::EscIntermediate,
                    _ => EscState::Normal,
                };
                Out::Nothing
            }
            EscState::EscIntermediate => {
                if !(0x20..=0x2f).contains(&b) {
                    self.state = EscState::Normal;
                }
                Out::Nothing
            }
            EscState::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.state = EscState::Normal;
                } else if b == 0x1b {
                    self.state = EscState::Esc;
                }
                Out::Nothing
            }
            EscState::Str => {
                match b {
                    0x07 => self.state = EscState::Normal,
                    0x1b => self.state = EscState::StrEsc,
                    _ => {}
                }
                Out::Nothing
            }
            EscState::StrEsc => {
                self.state = if b == b'\\' {
                    EscState::Normal
                } else {
                    EscState::Str
                };
                Out::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(input: &[u8]) -> String {
        let mut b = Buffer::new();
        b.push(input);
        lossy(&b.text)
    }

    #[test]
    fn strips_escapes_and_normalises_line_ends() {
        assert_eq!(text_of(b"\x1b[1;32mOK\x1b[0m done\r\n"), "OK done\n");
        assert_eq!(text_of(b"a\rb\r\n\nc"), "a\nb\n\nc");
        assert_eq!(text_of(b"\x1b]0;title\x07x\x1b(By"), "xy");
        assert_eq!(text_of(b"p\x1b[2K\x1b[1A q"), "p q");
    }

    #[test]
    fn escape_split_across_chunks() {
        let mut b = Buffer::new();
        b.push(b"ab\x1b[");
        b.push(b"31mcd\r");
        b.push(b"\nef");
        assert_eq!(lossy(&b.text), "abcd\nef");
        assert_eq!(b.line_starts, vec![0, 5]);
    }
}
