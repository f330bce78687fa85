//! SPDY/3.1 framing, the part of it `kubectl port-forward` speaks (through Go's `spdystream`):
//! frames read from and written to an upgraded connection, and the zlib-compressed header
//! blocks of `SYN_STREAM` and `SYN_REPLY`.
//!
//! A frame is 8 bytes of header and a payload of up to 2^24 − 1 bytes. A control frame's header
//! is `1 | version (15 bits) | type (16) | flags (8) | length (24)`; a data frame's is
//! `0 | stream id (31) | flags (8) | length (24)`. Header blocks are compressed with one zlib
//! stream per direction for the whole connection, primed with the dictionary of the SPDY/3
//! specification. kubectl's client does not use flow control (spdystream ignores
//! `WINDOW_UPDATE` and `SETTINGS`), so neither does this side.

use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The protocol version spoken.
const VERSION: u16 = 3;

/// `FLAG_FIN` of data frames and of `SYN_STREAM`/`SYN_REPLY`: the sender's half of the stream
/// ends with this frame.
pub const FLAG_FIN: u8 = 0x01;

/// `RST_STREAM` status: the stream was refused or malformed.
pub const PROTOCOL_ERROR: u32 = 1;

/// The largest control frame read (header blocks of port forwarding are a few dozen bytes).
const MAX_CONTROL: usize = 64 << 10;

/// Control frame types.
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;

/// One frame read from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new stream, with its (lower-cased) headers.
    SynStream {
        /// The stream's id (odd: opened by the client).
        stream_id: u32,
        /// `FLAG_FIN` and `FLAG_UNIDIRECTIONAL`.
        flags: u8,
        /// Header names (lower case) and values.
        headers: Vec<(String, String)>,
    },
    /// Bytes of a stream.
    Data {
        /// The stream.
        stream_id: u32,
        /// `FLAG_FIN` when the peer's half of the stream ends here.
        flags: u8,
        /// The payload.
        data: Bytes,
    },
    /// The peer abandoned a stream.
    RstStream {
        /// The stream.
        stream_id: u32,
    },
    /// A ping, to be echoed.
    Ping(u32),
    /// The peer is closing the connection.
    GoAway,
    /// A frame this side has no use for (`SETTINGS`, `WINDOW_UPDATE`, `HEADERS`, ...).
    Ignored,
}

/// The zlib dictionary of SPDY/3 header blocks (section 2.6.10.1 of the specification): the
/// length-prefixed common header names and values, then a run of common value fragments.
fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const FRAGMENTS: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        for f in FRAGMENTS {
            d.extend_from_slice(f.as_bytes());
        }
        d
    })
}

/// A protocol error: the connection cannot go on.
fn invalid(why: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.into())
}

/// One connection's header compression state: the peer's blocks are inflated, this side's
/// deflated, each with its own zlib stream.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(dictionary())
            .expect("a fresh zlib stream takes a dictionary");
        HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

impl HeaderCodec {
    /// Decodes a compressed header block.
    fn decode(&mut self, block: &[u8]) -> std::io::Result<Vec<(String, String)>> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            raw.reserve(1024);
            let before = self.inflate.total_in();
            let result = self
                .inflate
                .decompress_vec(input, &mut raw, FlushDecompress::Sync);
            input = &input[(self.inflate.total_in() - before) as usize..];
            match result {
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(dictionary())
                        .map_err(|e| invalid(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(invalid(format!("header block: {e}"))),
                Ok(Status::StreamEnd) => break,
                Ok(_) if input.is_empty() && raw.len() < raw.capacity() => break,
                Ok(_) => {}
            }
            if raw.len() > MAX_CONTROL {
                return Err(invalid("header block too large"));
            }
        }
        parse_header_block(&raw)
    }

    /// Encodes a header block.
    fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for s in [name, value] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflate into a growing buffer");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete once the output buffer was not filled.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// A `SYN_REPLY` accepting `stream_id`, with no headers.
    pub fn syn_reply(&mut self, stream_id: u32) -> Vec<u8> {
        let mut payload = stream_id.to_be_bytes().to_vec();
        payload.extend(self.encode(&[]));
        control(SYN_REPLY, 0, &payload)
    }
}

/// Parses an inflated header block: a count, then length-prefixed names and values.
fn parse_header_block(raw: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    let mut b = raw;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        if b.len() < n {
            return Err(invalid("truncated header block"));
        }
        let (head, tail) = b.split_at(n);
        b = tail;
        Ok(head)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes"));
    let mut headers = Vec::new();
    for _ in 0..count {
        let mut pair = [String::new(), String::new()];
        for s in &mut pair {
            let len = u32::from_be_bytes(take(4)?.try_into().expect("4 bytes")) as usize;
            *s = String::from_utf8_lossy(take(len)?).into_owned();
        }
        let [name, value] = pair;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// A control frame of type `kind`.
fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// A data frame of `stream_id` (`FLAG_FIN` in `flags` to end this side of it).
pub fn data(stream_id: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

/// The largest payload of one data frame written (the format allows 2^24 − 1 bytes).
pub const MAX_DATA: usize = 32 << 10;

/// A `PING` with `id` (the answer to the peer's ping is the same frame).
pub fn ping(id: u32) -> Vec<u8> {
    control(PING, 0, &id.to_be_bytes())
}

/// A `RST_STREAM` of `stream_id` with `status`.
pub fn rst_stream(stream_id: u32, status: u32) -> Vec<u8> {
    let mut payload = stream_id.to_be_bytes().to_vec();
    payload.extend_from_slice(&status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

/// Reads the next frame; `None` at the end of the connection.
pub async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    codec: &mut HeaderCodec,
) -> std::io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let first = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
    let flags = head[4];
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let is_control = first & 0x8000_0000 != 0;
    if is_control && len > MAX_CONTROL {
        return Err(invalid(format!("control frame of {len} bytes")));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    if !is_control {
        return Ok(Some(Frame::Data {
            stream_id: first & 0x7fff_ffff,
            flags,
            data: Bytes::from(payload),
        }));
    }
    let version = ((first >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(invalid(format!("SPDY version {version}")));
    }
    let stream_id = |p: &[u8]| -> std::io::Result<u32> {
        p.get(0..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) & 0x7fff_ffff)
            .ok_or_else(|| invalid("short control frame"))
    };
    Ok(Some(match (first & 0xffff) as u16 {
        SYN_STREAM => {
            // Stream id, associated stream id, priority and slot, then the header block.
            let block = payload
                .get(10..)
                .ok_or_else(|| invalid("short SYN_STREAM"))?;
            Frame::SynStream {
                stream_id: stream_id(&payload)?,
                flags,
                headers: codec.decode(block)?,
            }
        }
        RST_STREAM => Frame::RstStream {
            stream_id: stream_id(&payload)?,
        },
        PING => Frame::Ping(stream_id(&payload)?),
        GOAWAY => Frame::GoAway,
        _ => Frame::Ignored,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_the_specifications() {
        // Its length and the Adler-32 sum that zlib streams from Go's spdy framer carry.
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &byte in d {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    /// A `SYN_STREAM` as kubectl 1.32 sends it (captured): stream 1, the error stream of
    /// request 0 for port 8080.
    const KUBECTL_SYN_STREAM: &str = "800300010000003e0000000100000000000078f9e3c6a7c202253a703a2b294a\
        4dcc851625aca9a0808614cb45e01c60616061c0c0c0c0590489c64c50f2663400000000ffff";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn frames_are_read_and_header_blocks_round_trip() {
        let mut wire = Vec::new();
        // A peer's SYN_STREAM, encoded with a codec of its own.
        let mut peer = HeaderCodec::default();
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.extend([0; 6]);
        payload.extend(peer.encode(&[("streamType", "data"), ("port", "80")]));
        wire.extend(control(SYN_STREAM, 0, &payload));
        wire.extend(data(3, FLAG_FIN, b"hello"));
        wire.extend(ping(7));
        wire.extend(control(9, 0, &[0; 8]));
        wire.extend(rst_stream(3, PROTOCOL_ERROR));
        let mut codec = HeaderCodec::default();
        let mut r = &wire[..];
        let mut frames = Vec::new();
        while let Some(f) = read_frame(&mut r, &mut codec).await.unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames,
            [
                Frame::SynStream {
                    stream_id: 3,
                    flags: 0,
                    headers: vec![
                        ("streamtype".into(), "data".into()),
                        ("port".into(), "80".into())
                    ],
                },
                Frame::Data {
                    stream_id: 3,
                    flags: FLAG_FIN,
                    data: Bytes::from_static(b"hello"),
                },
                Frame::Ping(7),
                Frame::Ignored,
                Frame::RstStream { stream_id: 3 },
            ]
        );
        // This side's replies decode with the peer's inflater, one after another.
        for id in [1, 3] {
            let reply = codec.syn_reply(id);
            assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
            assert_eq!(&reply[8..12], &id.to_be_bytes());
            assert_eq!(peer.decode(&reply[12..]).unwrap(), vec![]);
        }
    }

    #[tokio::test]
    async fn kubectls_syn_stream_decodes() {
        let wire = hex(KUBECTL_SYN_STREAM);
        let mut codec = HeaderCodec::default();
        let frame = read_frame(&mut &wire[..], &mut codec).await.unwrap();
        let Some(Frame::SynStream {
            stream_id, headers, ..
        }) = frame
        else {
            panic!("{frame:?}")
        };
        assert_eq!(stream_id, 1);
        assert_eq!(
            headers,
            [
                ("streamtype", "error"),
                ("port", "8080"),
                ("requestid", "0")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[tokio::test]
    async fn a_truncated_or_foreign_frame_is_an_error_not_a_panic() {
        let mut codec = HeaderCodec::default();
        // SPDY/2.
        let v2 = [0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1];
        assert!(read_frame(&mut &v2[..], &mut codec).await.is_err());
        // A SYN_STREAM whose header block is not zlib.
        let bad = control(SYN_STREAM, 0, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3]);
        assert!(read_frame(&mut &bad[..], &mut codec).await.is_err());
        // A payload cut short.
        let short = &data(1, 0, b"hello")[..10];
        assert!(read_frame(&mut &short[..], &mut codec).await.is_err());
    }
}
