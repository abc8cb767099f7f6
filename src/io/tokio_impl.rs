//! `tokio::io::AsyncRead`/`AsyncWrite` (feature `tokio-io`): tokio's
//! traits only, no tokio runtime.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{ReadHalf, Stream, WriteHalf};

macro_rules! read_impl {
    ($t:ty) => {
        impl tokio::io::AsyncRead for $t {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
                self.get_mut()
                    .rd()
                    .poll_read_with(cx, |src| {
                        let n = src.len().min(buf.remaining());
                        buf.put_slice(&src[..n]);
                        n
                    })
                    .map(|r| r.map(drop))
            }
        }
    };
}

macro_rules! write_impl {
    ($t:ty) => {
        impl tokio::io::AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                self.get_mut().wr().poll_write_slices(cx, &[io::IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.get_mut().wr().poll_write_slices(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().wr().poll_flush_inner(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().wr().poll_shutdown_inner(cx)
            }
        }
    };
}

read_impl!(Stream);
read_impl!(ReadHalf);
write_impl!(Stream);
write_impl!(WriteHalf);
