//! Request bodies: JSON and small archives from memory, and archives streamed from a file
//! (a node's `/output`, up to the transfer cap), so an upload never holds the whole file.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from a file per frame.
const CHUNK: usize = 64 << 10;

/// What a request carries.
pub enum RequestBody {
    Bytes(Option<Bytes>),
    File {
        file: tokio::fs::File,
        /// Bytes still to send: the file's size when opened. A file that shrinks meanwhile
        /// ends the body with an error; one that grows is cut at that size.
        left: u64,
        buf: Box<[u8]>,
    },
}

impl RequestBody {
    pub fn bytes(bytes: Vec<u8>) -> Self {
        RequestBody::Bytes(Some(Bytes::from(bytes)))
    }

    /// The whole of `path`, streamed.
    pub async fn file(path: &Path) -> io::Result<Self> {
        let file = tokio::fs::File::open(path).await?;
        let left = file.metadata().await?.len();
        Ok(RequestBody::File {
            file,
            left,
            buf: vec![0; CHUNK].into_boxed_slice(),
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            RequestBody::Bytes(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::File { file, left, buf } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                let mut read = ReadBuf::new(&mut buf[..want]);
                match Pin::new(file).poll_read(cx, &mut read) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(Some(Err(
                        io::Error::new(io::ErrorKind::UnexpectedEof, "the file shrank while sent"),
                    ))),
                    Poll::Ready(Ok(())) => {
                        let chunk = Bytes::copy_from_slice(read.filled());
                        *left -= chunk.len() as u64;
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Bytes(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            RequestBody::File { left, .. } => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Bytes(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::File { left, .. } => SizeHint::with_exact(*left),
        }
    }
}
