//! Both directions of one HTTP/1 connection, paired.
//!
//! The response decoder needs each request's method (HEAD and CONNECT
//! responses are framed differently), and the request decoder needs to know
//! whether an Upgrade or CONNECT request was accepted before it can tell
//! pipelined requests from tunnelled bytes. [`Connection`] does both, so the
//! caller only feeds bytes per direction. Request *n* (0-based) pairs with
//! final response *n*.
//!
//! Feed each direction's bytes in order. When both directions have data
//! waiting, feeding the request side first lets each response know its
//! request's method; a response decoded before its request is framed as a
//! response to GET.

use super::head::{Error, Method};
use super::stream::{Decoder, Event};
pub use crate::Direction;

/// A failure in one direction; the other may still be followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnError {
    /// The direction that failed.
    pub direction: Direction,
    /// Why.
    pub error: Error,
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = match self.direction {
            Direction::Request => "request",
            Direction::Response => "response",
        };
        write!(f, "{d} stream: {}", self.error)
    }
}

impl std::error::Error for ConnError {}

/// The two decoders of one HTTP/1 connection.
#[derive(Debug)]
pub struct Connection {
    requests: Decoder,
    responses: Decoder,
    /// Final responses seen.
    final_responses: u64,
    /// Index of the request whose response switched protocols, if any.
    switched_at: Option<u64>,
}

impl Default for Connection {
    fn default() -> Self {
        Self::new()
    }
}

impl Connection {
    /// A connection seen from its start.
    pub fn new() -> Self {
        Connection {
            requests: Decoder::request(),
            responses: Decoder::response(),
            final_responses: 0,
            switched_at: None,
        }
    }

    /// A connection joined mid-way: both sides look for the next message
    /// start (see [`Decoder::new_mid_stream`]). The first response seen may
    /// answer a request sent before the join, so pairing by order can be
    /// off by one until the connection goes idle.
    pub fn new_mid_stream() -> Self {
        Connection {
            requests: Decoder::new_mid_stream(super::stream::Kind::Request),
            responses: Decoder::new_mid_stream(super::stream::Kind::Response),
            final_responses: 0,
            switched_at: None,
        }
    }

    /// The request-side decoder.
    pub fn requests(&self) -> &Decoder {
        &self.requests
    }

    /// The response-side decoder.
    pub fn responses(&self) -> &Decoder {
        &self.responses
    }

    /// Feeds the next bytes of one direction; events come tagged with
    /// their direction (request-side events may come out of a response feed
    /// when a response settles an upgrade).
    pub fn feed<F: FnMut(Direction, Event<'_>)>(
        &mut self,
        direction: Direction,
        data: &[u8],
        on: &mut F,
    ) -> Result<(), ConnError> {
        match direction {
            Direction::Request => {
                let responses = &mut self.responses;
                let r = self.requests.feed(data, &mut |ev| {
                    if let Event::Request(h) = &ev {
                        responses.expect_response_to(h.method_kind());
                    }
                    on(Direction::Request, ev);
                });
                r.map_err(|error| ConnError { direction, error })?;
            }
            Direction::Response => {
                let final_responses = &mut self.final_responses;
                let switched_at = &mut self.switched_at;
                let r = self.responses.feed(data, &mut |ev| {
                    if let Event::Response(h) = &ev {
                        let switched = h.status == 101
                            || (h.request_method == Method::Connect
                                && (200..300).contains(&h.status));
                        if switched {
                            *switched_at = Some(*final_responses);
                        }
                        *final_responses += 1;
                    }
                    on(Direction::Response, ev);
                });
                r.map_err(|error| ConnError { direction, error })?;
            }
        }
        self.settle(on)
    }

    /// The next bytes of `direction` begin one write of the peer; see
    /// [`Decoder::record_start`].
    pub fn record_start(&mut self, direction: Direction) {
        match direction {
            Direction::Request => self.requests.record_start(),
            Direction::Response => self.responses.record_start(),
        }
    }

    /// One direction closed: ends a close-delimited response body.
    pub fn eof<F: FnMut(Direction, Event<'_>)>(
        &mut self,
        direction: Direction,
        on: &mut F,
    ) -> Result<(), ConnError> {
        let dec = match direction {
            Direction::Request => &mut self.requests,
            Direction::Response => &mut self.responses,
        };
        dec.eof(&mut |ev| on(direction, ev))
            .map_err(|error| ConnError { direction, error })
    }

    /// `len` bytes of one direction were lost; see [`Decoder::gap`].
    pub fn gap<F: FnMut(Direction, Event<'_>)>(
        &mut self,
        direction: Direction,
        len: u64,
        on: &mut F,
    ) -> Result<(), ConnError> {
        let dec = match direction {
            Direction::Request => &mut self.requests,
            Direction::Response => &mut self.responses,
        };
        dec.gap(len, &mut |ev| on(direction, ev))
            .map_err(|error| ConnError { direction, error })
    }

    /// Lets a paused request side go on once its response is known.
    fn settle<F: FnMut(Direction, Event<'_>)>(&mut self, on: &mut F) -> Result<(), ConnError> {
        while let Some(i) = self.requests.awaiting_upgrade() {
            if i >= self.final_responses {
                break;
            }
            let responses = &mut self.responses;
            self.requests
                .resolve_upgrade(self.switched_at == Some(i), &mut |ev| {
                    if let Event::Request(h) = &ev {
                        responses.expect_response_to(h.method_kind());
                    }
                    on(Direction::Request, ev);
                })
                .map_err(|error| ConnError {
                    direction: Direction::Request,
                    error,
                })?;
        }
        Ok(())
    }
}
