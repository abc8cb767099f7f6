//! `futures_io::AsyncRead`/`AsyncWrite` (feature `futures-io`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{ReadHalf, Stream, WriteHalf};

macro_rules! read_impl {
    ($t:ty) => {
        impl futures_io::AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
                self.get_mut().rd().poll_read_slice(cx, buf)
            }
        }
    };
}

macro_rules! write_impl {
    ($t:ty) => {
        impl futures_io::AsyncWrite for $t {
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

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().wr().poll_flush_inner(cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.get_mut().wr().poll_shutdown_inner(cx)
            }
        }
    };
}

read_impl!(Stream);
read_impl!(ReadHalf);
write_impl!(Stream);
write_impl!(WriteHalf);
