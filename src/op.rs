//! The request kinds (S27, S31) and what each asks of its handle, the
//! same on every backend. The kind itself, and what it asks of its buffer,
//! is in the shared leaf (`shared::Op`), which the backends name too; what a
//! kind does on an OS lives in that backend's `op.rs` (`sys/unix/op.rs`,
//! `sys/windows/op.rs`): adding a kind touches the leaf, this file and one
//! file per backend.

use crate::handle::HandleKind;
use crate::sys::{self, HandleDriver};

pub use crate::shared::Op;

impl Op {
    /// `Ok` when a handle of `kind` runs this kind, else why not.
    pub(crate) fn suits(self, kind: HandleKind) -> Result<(), &'static str> {
        use HandleKind as K;
        let ok = match self {
            Op::Read | Op::Write => matches!(kind, K::TcpStream | K::LocalStream | K::Stream),
            Op::ReadAt(_) | Op::WriteAt(_) => kind == K::File,
            // Which kinds accept differs between the OSes: the backend says.
            Op::Accept => <sys::Handle as HandleDriver>::accepts(kind),
            Op::Connect(_) => kind == K::TcpStream,
            Op::SendTo(_) | Op::RecvFrom => kind == K::Udp,
            Op::Post => return Err("user posts go to a port, not a handle"),
        };
        match ok {
            true => Ok(()),
            false if kind == K::File => Err("a regular file takes positional requests (read_at, write_at)"),
            false => Err("this handle does not support this request"),
        }
    }
}
