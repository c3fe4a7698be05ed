//! Both directions of one HTTP/2 connection.
//!
//! A thin pairing of two [`Decoder`]s: the client side expects the preface,
//! the server side does not; joined mid-way both look for frame
//! boundaries. Requests and responses pair by stream identifier: the
//! request's HEADERS (and DATA) come tagged [`Direction::Request`], the
//! response's [`Direction::Response`], both with the same `stream_id`.

use std::fmt;

use super::conn::{Decoder, Event, Side};
use super::frame::Error;
use crate::Direction;

/// A failure in one direction; the other may still be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnError {
    /// The direction that failed.
    pub direction: Direction,
    /// Why.
    pub error: Error,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Request => "client",
            Direction::Response => "server",
        };
        write!(f, "HTTP/2 {d} stream: {}", self.error)
    }
}

impl std::error::Error for ConnError {}

/// The two decoders of one HTTP/2 connection.
#[derive(Debug)]
pub struct Connection {
    requests: Decoder,
    responses: Decoder,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    /// A connection seen from its first byte.
    pub fn new() -> Self {
        Connection {
            requests: Decoder::new(Side::Client),
            responses: Decoder::new(Side::Server),
        }
    }

    /// A connection joined mid-way (see [`Decoder::new_mid_stream`]).
    pub fn new_mid_stream() -> Self {
        Connection {
            requests: Decoder::new_mid_stream(),
            responses: Decoder::new_mid_stream(),
        }
    }

    /// The client-to-server decoder.
    pub fn requests(&self) -> &Decoder {
        &self.requests
    }

    /// The server-to-client decoder.
    pub fn responses(&self) -> &Decoder {
        &self.responses
    }

    /// Feeds the next bytes of one direction.
    pub fn feed<F: FnMut(Direction, Event<'_>)>(
        &mut self,
        direction: Direction,
        data: &[u8],
        on: &mut F,
    ) -> Result<(), ConnError> {
        self.side(direction)
            .feed(data, &mut |ev| on(direction, ev))
            .map_err(|error| ConnError { direction, error })
    }

    /// The next bytes of `direction` begin one write of the peer; see
    /// [`Decoder::record_start`].
    pub fn record_start(&mut self, direction: Direction) {
        self.side(direction).record_start();
    }

    /// `len` bytes of one direction were lost; see [`Decoder::gap`].
    pub fn gap<F: FnMut(Direction, Event<'_>)>(
        &mut self,
        direction: Direction,
        len: u64,
        on: &mut F,
    ) {
        self.side(direction).gap(len, &mut |ev| on(direction, ev));
    }

    fn side(&mut self, direction: Direction) -> &mut Decoder {
        match direction {
            Direction::Request => &mut self.requests,
            Direction::Response => &mut self.responses,
        }
    }
}
