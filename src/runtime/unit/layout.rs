//! Byte layouts of Unit's `wasm` guest ABI: the request Wharf writes into the shared
//! buffer, and the header and body structs the guest hands back.
//!
//! Everything here works on plain byte slices, so every bound is checked in one place and
//! tested without an engine. Offsets the guest supplies are untrusted: each read is
//! checked against the slice it reads from, and a violation is an `AbiError`, never a
//! panic. All integers are little-endian.

use bytes::Bytes;
use thiserror::Error;

/// Size of the shared buffer the guest sees (`nxt_wasm_get_init_mem_size`).
pub const BUFFER_SIZE: u32 = 32 * 1024 * 1024;

/// What the guest is asked to allocate: the buffer plus Unit's 64 KiB of slack.
pub const ALLOCATION_SIZE: u32 = BUFFER_SIZE + 64 * 1024;

/// Size of the fixed request header, before the fields array.
pub const REQUEST_HEADER_SIZE: usize = 104;

const FIELD_SIZE: usize = 16;

/// A guest broke the ABI's contract; the request fails and the instance is discarded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AbiError {
    #[error("the guest passed an offset or size outside its memory ({what})")]
    OutOfBounds { what: &'static str },
    #[error("the request head does not fit the {BUFFER_SIZE}-byte shared buffer")]
    RequestTooLarge,
}

/// The request as the guest reads it.
pub struct RequestHead<'a> {
    pub method: &'a [u8],
    pub version: &'a [u8],
    pub path: &'a [u8],
    pub query: &'a [u8],
    pub remote: &'a [u8],
    pub local_addr: &'a [u8],
    pub local_port: &'a [u8],
    pub server_name: &'a [u8],
    pub headers: &'a [(Bytes, Bytes)],
    pub content_len: u64,
    pub tls: bool,
}

impl RequestHead<'_> {
    /// Bytes the head takes in the buffer; the first body bytes follow it.
    pub fn encoded_len(&self) -> usize {
        let strings = [
            self.path,
            self.method,
            self.version,
            self.query,
            self.remote,
            self.local_addr,
            self.local_port,
            self.server_name,
        ];
        let fixed: usize = strings.iter().map(|s| s.len() + 1).sum();
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2 + FIELD_SIZE)
            .sum();
        REQUEST_HEADER_SIZE + fixed + headers
    }

    /// Room for body bytes in the first call, after the head.
    pub fn first_body_room(&self) -> usize {
        (BUFFER_SIZE as usize).saturating_sub(self.encoded_len())
    }

    /// Writes the head into `buf` (the whole shared buffer). The first `content_sent`
    /// body bytes must already be in place at `encoded_len()`.
    pub fn write(&self, buf: &mut [u8], content_sent: usize) -> Result<(), AbiError> {
        let content_off = self.encoded_len();
        if content_off + content_sent > buf.len().min(BUFFER_SIZE as usize) {
            return Err(AbiError::RequestTooLarge);
        }
        let mut w = Writer {
            buf,
            pos: REQUEST_HEADER_SIZE + FIELD_SIZE * self.headers.len(),
        };
        // Strings are packed in this order; their slots in the header are not.
        let path = w.string(self.path);
        let method = w.string(self.method);
        let version = w.string(self.version);
        let query = w.string(self.query);
        let remote = w.string(self.remote);
        let local_addr = w.string(self.local_addr);
        let local_port = w.string(self.local_port);
        let server_name = w.string(self.server_name);
        for (i, (name, value)) in self.headers.iter().enumerate() {
            let (name_off, name_len) = w.string(name);
            let (value_off, value_len) = w.string(value);
            let at = REQUEST_HEADER_SIZE + i * FIELD_SIZE;
            put_u32(w.buf, at, name_off);
            put_u32(w.buf, at + 4, name_len);
            put_u32(w.buf, at + 8, value_off);
            put_u32(w.buf, at + 12, value_len);
        }
        let sent = content_sent;

        let slots = [
            method,
            version,
            path,
            query,
            remote,
            local_addr,
            local_port,
            server_name,
        ];
        for (i, (off, len)) in slots.iter().enumerate() {
            put_u32(w.buf, i * 8, *off);
            put_u32(w.buf, i * 8 + 4, *len);
        }
        put_u64(w.buf, 64, self.content_len);
        put_u64(w.buf, 72, sent as u64);
        put_u32(w.buf, 80, to_u32(sent));
        put_u32(w.buf, 84, to_u32(content_off));
        put_u32(w.buf, 88, to_u32(content_off + sent));
        put_u32(w.buf, 92, to_u32(self.headers.len()));
        put_u32(w.buf, 96, u32::from(self.tls));
        put_u32(w.buf, 100, 0);
        Ok(())
    }
}

/// Most body bytes one later call can carry.
pub const MAX_BODY_CHUNK: usize = BUFFER_SIZE as usize - REQUEST_HEADER_SIZE;

/// Describes a later body chunk, already written at offset 104: rewrites the four fields
/// the guest reads it by (guests often write their response over the request).
pub fn describe_chunk(buf: &mut [u8], chunk_len: usize, total_sent: u64) -> Result<(), AbiError> {
    if chunk_len > MAX_BODY_CHUNK || REQUEST_HEADER_SIZE + chunk_len > buf.len() {
        return Err(AbiError::RequestTooLarge);
    }
    put_u64(buf, 72, total_sent);
    put_u32(buf, 80, to_u32(chunk_len));
    put_u32(buf, 84, to_u32(REQUEST_HEADER_SIZE));
    put_u32(buf, 88, to_u32(chunk_len));
    Ok(())
}

/// Reads `{u32 size; u8 data[size]}` at `offset` of `memory`.
pub fn read_body_piece(memory: &[u8], offset: u64) -> Result<&[u8], AbiError> {
    let size = read_u32(memory, offset, "response body size")?;
    slice(memory, offset + 4, u64::from(size), "response body")
}

/// A header field's name and value, borrowed from guest memory.
pub type Field<'m> = (&'m [u8], &'m [u8]);

/// Reads `{u32 nfields; field[nfields]}` at `offset`; names and values are relative to the
/// struct itself, as Unit reads them. The fields are checked as they are read.
pub fn read_headers(memory: &[u8], offset: u64) -> Result<HeaderFields<'_>, AbiError> {
    let count = read_u32(memory, offset, "response header count")?;
    // Check the whole array first: a hostile count is just an error.
    slice(
        memory,
        offset + 4,
        u64::from(count) * FIELD_SIZE as u64,
        "response header fields",
    )?;
    Ok(HeaderFields {
        memory,
        offset,
        count,
    })
}

/// A response's header fields in guest memory, their array already bounds-checked.
#[derive(Debug, Clone, Copy)]
pub struct HeaderFields<'m> {
    memory: &'m [u8],
    offset: u64,
    count: u32,
}

impl<'m> HeaderFields<'m> {
    pub fn count(&self) -> usize {
        self.count as usize
    }

    pub fn iter(&self) -> impl Iterator<Item = Result<Field<'m>, AbiError>> + use<'m> {
        let Self {
            memory,
            offset,
            count,
        } = *self;
        (0..u64::from(count)).map(move |i| {
            let at = offset + 4 + i * FIELD_SIZE as u64;
            let field = |k: u64| read_u32(memory, at + k * 4, "response header field");
            let (name_off, name_len) = (field(0)?, field(1)?);
            let (value_off, value_len) = (field(2)?, field(3)?);
            let name = slice(
                memory,
                offset + u64::from(name_off),
                u64::from(name_len),
                "header name",
            )?;
            let value = slice(
                memory,
                offset + u64::from(value_off),
                u64::from(value_len),
                "header value",
            )?;
            Ok((name, value))
        })
    }
}

fn slice<'m>(
    memory: &'m [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'m [u8], AbiError> {
    let end = offset
        .checked_add(len)
        .ok_or(AbiError::OutOfBounds { what })?;
    let (start, end) = (usize::try_from(offset), usize::try_from(end));
    match (start, end) {
        (Ok(start), Ok(end)) if end <= memory.len() => Ok(&memory[start..end]),
        _ => Err(AbiError::OutOfBounds { what }),
    }
}

fn read_u32(memory: &[u8], offset: u64, what: &'static str) -> Result<u32, AbiError> {
    let bytes = slice(memory, offset, 4, what)?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    /// Appends a NUL-terminated string; returns its offset and length (without the NUL).
    fn string(&mut self, s: &[u8]) -> (u32, u32) {
        let at = self.pos;
        self.buf[at..at + s.len()].copy_from_slice(s);
        self.buf[at + s.len()] = 0;
        self.pos += s.len() + 1;
        (to_u32(at), to_u32(s.len()))
    }
}

/// Buffer offsets and lengths are bounded by `BUFFER_SIZE`, so they always fit.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(buf: &[u8], at: usize) -> u32 {
        read_u32(buf, at as u64, "test").expect("in bounds")
    }

    fn string_at(buf: &[u8], slot: usize) -> &[u8] {
        let (off, len) = (
            u32_at(buf, slot * 8) as usize,
            u32_at(buf, slot * 8 + 4) as usize,
        );
        assert_eq!(buf[off + len], 0, "NUL-terminated");
        &buf[off..off + len]
    }

    #[test]
    fn writes_unit_request_layout() {
        let headers = &[
            (
                Bytes::from_static(b"Host"),
                Bytes::from_static(b"localhost"),
            ),
            (Bytes::from_static(b"X-A"), Bytes::from_static(b"1")),
        ];
        let head = RequestHead {
            method: b"POST",
            version: b"HTTP/1.1",
            path: b"/echo?x=1",
            query: b"x=1",
            remote: b"127.0.0.1",
            local_addr: b"127.0.0.1",
            local_port: b"8080",
            server_name: b"localhost",
            headers,
            content_len: 5,
            tls: false,
        };
        let mut buf = vec![0u8; 4096];
        let at = head.encoded_len();
        buf[at..at + 5].copy_from_slice(b"hello");
        head.write(&mut buf, 5).expect("fits");
        assert_eq!(string_at(&buf, 0), b"POST");
        assert_eq!(string_at(&buf, 1), b"HTTP/1.1");
        assert_eq!(string_at(&buf, 2), b"/echo?x=1");
        assert_eq!(string_at(&buf, 7), b"localhost");
        // Strings start after the fields array, path first.
        assert_eq!(
            u32_at(&buf, 16) as usize,
            REQUEST_HEADER_SIZE + 2 * FIELD_SIZE
        );
        assert_eq!(u32_at(&buf, 92), 2);
        let name_off = u32_at(&buf, REQUEST_HEADER_SIZE + FIELD_SIZE) as usize;
        assert_eq!(&buf[name_off..name_off + 3], b"X-A");
        let content_off = u32_at(&buf, 84) as usize;
        assert_eq!(content_off, head.encoded_len());
        assert_eq!(&buf[content_off..content_off + 5], b"hello");
        assert_eq!(u32_at(&buf, 88) as usize, content_off + 5);
    }

    #[test]
    fn later_chunks_are_described_at_104() {
        let mut buf = vec![0u8; 1024];
        describe_chunk(&mut buf, 3, 10).expect("fits");
        assert_eq!(
            u64::from_le_bytes(buf[72..80].try_into().expect("8 bytes")),
            10
        );
        assert_eq!(
            (u32_at(&buf, 80), u32_at(&buf, 84), u32_at(&buf, 88)),
            (3, 104, 3)
        );
        assert!(describe_chunk(&mut buf, 2000, 10).is_err());
    }

    #[test]
    fn hostile_offsets_are_errors() {
        let mut memory = vec![0u8; 64];
        memory[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_headers(&memory, 0).is_err(), "nfields = 2^32-1");
        assert!(read_body_piece(&memory, 0).is_err(), "size past the end");
        assert!(read_body_piece(&memory, u64::from(u32::MAX)).is_err());
        memory[0..4].copy_from_slice(&1u32.to_le_bytes());
        memory[4..8].copy_from_slice(&60u32.to_le_bytes()); // name_off past the end
        memory[8..12].copy_from_slice(&8u32.to_le_bytes());
        let fields = read_headers(&memory, 0).expect("the array itself is in bounds");
        assert!(fields.iter().any(|field| field.is_err()));
    }

    #[test]
    fn reads_headers_relative_to_the_struct() {
        let mut memory = vec![0u8; 128];
        let base = 32;
        memory[base..base + 4].copy_from_slice(&1u32.to_le_bytes());
        for (k, v) in [20u32, 4, 24, 2].iter().enumerate() {
            memory[base + 4 + k * 4..base + 8 + k * 4].copy_from_slice(&v.to_le_bytes());
        }
        memory[base + 20..base + 26].copy_from_slice(b"Name42");
        let headers = read_headers(&memory, base as u64).expect("valid");
        let fields: Result<Vec<_>, _> = headers.iter().collect();
        assert_eq!(fields.expect("valid"), vec![(&b"Name"[..], &b"42"[..])]);
    }
}
