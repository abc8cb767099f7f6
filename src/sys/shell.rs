//! The backend of a target that has none: neither Unix nor Windows (wasm,
//! UEFI, bare metal). The crate stops building here, with one message,
//! instead of with every use of a backend type the target lacks: the types
//! below keep the rest of the crate type-checking. They are uninhabited:
//! nothing can make a port, a handle or a slot of this backend, so none of
//! their methods has a body to run.

use std::convert::Infallible as Never;
use std::io;
use std::time::Duration;

use super::{BlockingCall, HandleDriver, PortDriver, SlotOps};
use crate::request::{Packet, Request};
use crate::shared::error::{Error, Result};
use crate::shared::{DriverInfo, DriverKind, HandleKind, RequestId};

compile_error!(
    "iocompletion has no backend for this target: it runs on Linux and Android (io_uring, epoll), \
     macOS, iOS and the BSDs (kqueue), and Windows (IOCP)"
);

/// A port of no backend: none can be made.
#[derive(Clone)]
pub(crate) struct Port(Never);

/// A handle of no backend: none can be made.
pub(crate) struct Handle(Never);

/// A concurrency slot of no backend: none can be held.
#[derive(Clone)]
pub(crate) struct Slot(Never);

/// The OS part of a request: nothing.
#[derive(Default)]
pub(crate) struct RequestOs;

// The conversions the core names for every target; the target's
// `std::net` has no socket to convert (its sockets cannot be made).
impl From<std::net::TcpStream> for Handle {
    fn from(_: std::net::TcpStream) -> Handle {
        unreachable!("{}", unsupported())
    }
}

impl From<std::net::TcpListener> for Handle {
    fn from(_: std::net::TcpListener) -> Handle {
        unreachable!("{}", unsupported())
    }
}

impl From<std::net::UdpSocket> for Handle {
    fn from(_: std::net::UdpSocket) -> Handle {
        unreachable!("{}", unsupported())
    }
}

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, "iocompletion has no backend for this target")
}

impl SlotOps for Slot {
    fn release(&self) {
        match self.0 {}
    }
}

impl PortDriver for Port {
    type Slot = Slot;
    const ABORTED_CODE: u32 = 1;
    const OUT_OF_RESOURCES: &'static [u32] = &[];
    const QUEUE_LEN_KNOWN: bool = false;

    fn status_code_of(e: &io::Error) -> u32 {
        e.raw_os_error().unwrap_or(1) as u32
    }

    fn not_found() -> io::Error {
        io::Error::from(io::ErrorKind::NotFound)
    }

    fn has_driver(_: DriverKind) -> bool {
        false
    }

    fn new(_: usize, _: Option<DriverKind>, _: BlockingCall) -> io::Result<Self> {
        Err(unsupported())
    }

    fn concurrency(&self) -> usize {
        match self.0 {}
    }

    fn is_closed(&self) -> bool {
        match self.0 {}
    }

    fn waiting(&self) -> usize {
        match self.0 {}
    }

    fn has_backlog(&self) -> bool {
        match self.0 {}
    }

    fn post(&self, _: Packet) -> std::result::Result<(), (Error, Packet)> {
        match self.0 {}
    }

    fn get_many(
        &self,
        _: &mut Vec<Packet>,
        _: usize,
        _: Option<Duration>,
        _: Option<usize>,
    ) -> Result<usize> {
        match self.0 {}
    }

    fn interrupts(&self) -> usize {
        match self.0 {}
    }

    fn close(&self) -> bool {
        match self.0 {}
    }

    fn close_dropped(&self, _: &mut Vec<Packet>) {
        match self.0 {}
    }

    fn interrupt(&self) {
        match self.0 {}
    }

    fn maintain(&self) {
        match self.0 {}
    }

    fn current_slot() -> Option<Slot> {
        None
    }

    fn driver(&self) -> DriverInfo {
        match self.0 {}
    }
}

impl HandleDriver for Handle {
    type Port = Port;

    fn is_socket(_: HandleKind) -> bool {
        false
    }

    fn accepts(_: HandleKind) -> bool {
        false
    }

    fn timed_out_code(_: Option<HandleKind>) -> u32 {
        1
    }

    fn kind(&self) -> HandleKind {
        match self.0 {}
    }

    fn is_closed(&self) -> bool {
        match self.0 {}
    }

    fn describe(&self) -> String {
        match self.0 {}
    }

    fn skip_completion_port_on_success(&self) -> Result<bool> {
        match self.0 {}
    }

    fn associate(&self, _: &Port) -> Result<()> {
        match self.0 {}
    }

    fn submit(&self, _: Request, _: &Port) -> std::result::Result<(), (Error, Request)> {
        match self.0 {}
    }

    fn cancel(&self, _: RequestId) -> Result<()> {
        match self.0 {}
    }

    fn cancel_all(&self) -> usize {
        match self.0 {}
    }

    fn close(&self) -> bool {
        match self.0 {}
    }
}
