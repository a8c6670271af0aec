//! A layer's bytes as the tar stream they hold: plain, gzip'd or zstd'd (told by magic
//! bytes), optionally cut off at a byte cap so that a small compressed layer cannot
//! unpack without end. Owns decompression only; what the tar says is read elsewhere.

use std::io::{self, BufRead, BufReader, Read};

/// The decompressed stream of a tar that may be gzip'd or zstd'd, told by its magic
/// bytes (media types lie more often than magic does).
pub(crate) fn decompress<'a>(blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>, String> {
    let mut reader = BufReader::new(blob);
    let head = reader.fill_buf().map_err(|e| e.to_string())?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = ruzstd::decoding::StreamingDecoder::new(reader)
            .map_err(|e| format!("bad zstd header: {e}"))?;
        Ok(Box::new(ZstdFrames {
            decoder: Some(decoder),
        }))
    } else {
        Ok(Box::new(reader))
    }
}

/// A zstd stream of one or more concatenated frames (`zstd` and `pzstd` may write
/// several; one ruzstd decoder reads one frame).
struct ZstdFrames<R: BufRead> {
    decoder: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(decoder) = self.decoder.as_mut() else {
                return Ok(0);
            };
            let n = decoder.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: go on with the next one, if any bytes are left.
            let Some(decoder) = self.decoder.take() else {
                return Ok(0);
            };
            let (mut source, frame) = decoder.into_parts();
            if source.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let next = ruzstd::decoding::StreamingDecoder::new_with_decoder(source, frame)
                .map_err(|e| io::Error::other(format!("bad zstd frame: {e}")))?;
            self.decoder = Some(next);
        }
    }
}

/// The decompressed stream of a layer was longer than its cap (a gzip or zstd bomb). It
/// travels inside the `io::Error` that stops the tar reader, so the cause is not lost.
#[derive(Debug, thiserror::Error)]
#[error("the uncompressed layer exceeds {limit} bytes")]
pub(crate) struct UnpackedTooLarge {
    pub(crate) limit: u64,
}

/// A reader that fails with [`UnpackedTooLarge`] once more than `limit` bytes came out.
pub(crate) struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Capped<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Self {
            inner,
            read: 0,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // One byte past the cap is read, so a stream of exactly `limit` bytes passes.
        let room = (self.limit - self.read.min(self.limit)).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(UnpackedTooLarge { limit: self.limit }));
        }
        Ok(n)
    }
}

/// The cap a tar reader's error reports, when that is why it stopped.
pub(crate) fn cap_hit(error: &io::Error) -> Option<u64> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<UnpackedTooLarge>())
        .map(|e| e.limit)
}
