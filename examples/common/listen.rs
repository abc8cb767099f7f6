//! A TCP listener with the backlog tokio's `TcpListener::bind` asks for
//! (1024), shared by the example servers that are measured against tokio:
//! std's `TcpListener::bind` asks for 128, too few when hundreds or
//! thousands of clients connect at once (their SYNs are dropped and
//! retried a second later).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Socket, Type};

/// Binds and listens on `addr` with a backlog of 1024.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
