//! The SNI of a TLS ClientHello, read without terminating TLS. Pure and
//! bounds-checked: every length is checked against the bytes there are, nothing is
//! indexed, and a malformed hello is an error, never a panic (fuzzed by
//! `fuzz/fuzz_targets/sni.rs`).
//!
//! [`parse`] takes the bytes an app sent into a tunnel so far and answers
//! [`Progress::Incomplete`] until the first handshake message is whole. The message
//! may span TLS records (a record holds at most 16 KiB); they are reassembled. The
//! caller bounds how much it reads ([`MAX_HELLO_BYTES`]: one full record and its
//! header) and for how long.
//!
//! What is read (RFC 8446 §4.1.2, RFC 6066 §3): the record header (handshake, a
//! TLS 1.0–1.3 record version, 1 to 16384 bytes), the handshake header (a
//! ClientHello, at most 16 KiB), the hello's fixed fields and vectors up to the
//! extensions, and among those `server_name` and the encrypted ClientHello
//! (`encrypted_client_hello`, `0xfe0d`, and the older ESNI draft's `0xffce`).
//! Refused as malformed: a truncated or overlong vector, bytes after the
//! extensions, two `server_name` extensions, a name list that is empty or holds a
//! name of another type or two host names, and a host name that is not letters,
//! digits, `-` and `.`.

use std::borrow::Cow;

/// The TLS record header: type, version, length.
pub const RECORD_HEADER: usize = 5;

/// The most a TLS plaintext record holds (RFC 8446 §5.1).
pub const MAX_RECORD: usize = 16 * 1024;

/// The most bytes a tunnel reads while waiting for a whole ClientHello: one full
/// record and its header.
pub const MAX_HELLO_BYTES: usize = MAX_RECORD + RECORD_HEADER;

/// The longest host name accepted: 253 bytes and a trailing dot.
const MAX_HOST_NAME: usize = 254;

const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_ALERT: u8 = 21;
const CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const NAME_TYPE_HOST: u8 = 0;

/// `encrypted_client_hello` (draft-ietf-tls-esni, RFC 9849).
pub const EXT_ECH: u16 = 0xfe0d;

/// `encrypted_server_name`, the older ESNI drafts.
const EXT_ESNI: u16 = 0xffce;

/// What a ClientHello says about where it is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The one host name of `server_name`, as sent (not canonicalized).
    pub sni: Option<Cow<'a, str>>,
    /// It carries an encrypted ClientHello (ECH or ESNI): the name that matters
    /// cannot be read.
    pub encrypted: bool,
}

/// How far the bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<'a> {
    /// The first handshake message is whole, and a ClientHello.
    Complete(ClientHello<'a>),
    /// More bytes are needed.
    Incomplete,
}

/// Why the bytes are not a ClientHello this parser accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("the bytes are not a TLS handshake record (content type {0})")]
    NotHandshake(u8),
    #[error("the TLS record version {0:#06x} is not one of TLS 1.0 to 1.3")]
    RecordVersion(u16),
    #[error("a TLS record of {0} bytes; handshake records hold 1 to 16384")]
    RecordLength(usize),
    #[error("the first handshake message is of type {0}, not a ClientHello")]
    NotClientHello(u8),
    #[error("the ClientHello is {0} bytes, more than the 16384 accepted")]
    TooLarge(usize),
    #[error("the ClientHello is malformed: {0}")]
    Malformed(&'static str),
}

/// A fatal TLS alert the sidecar closes a refused tunnel with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    /// 40: the bytes were not a usable ClientHello.
    HandshakeFailure = 40,
    /// 80: the destination could not be reached.
    InternalError = 80,
    /// 112: the name asked for is not the one allowed.
    UnrecognizedName = 112,
}

impl Alert {
    /// The alert as a plaintext TLS record: fatal, with this description.
    pub fn record(self) -> [u8; 7] {
        [CONTENT_ALERT, 3, 3, 0, 2, 2, self as u8]
    }
}

/// Reads the ClientHello at the start of `input`, across records.
///
/// # Errors
///
/// When the bytes cannot be the start of an acceptable ClientHello.
pub fn parse(input: &[u8]) -> Result<Progress<'_>, HelloError> {
    let mut rest = input;
    // The handshake bytes so far: borrowed while one record holds them.
    let mut single: &[u8] = &[];
    let mut joined: Option<Vec<u8>> = None;
    loop {
        let message = joined.as_deref().unwrap_or(single);
        if let Some(len) = message_len(message)? {
            // `message_len` saw all `len` bytes.
            return match &joined {
                None => parse_body(single.get(4..len).unwrap_or_default()).map(Progress::Complete),
                Some(bytes) => parse_body(bytes.get(4..len).unwrap_or_default())
                    .map(|hello| Progress::Complete(hello.into_owned())),
            };
        }
        let Some((fragment, after)) = record(rest)? else {
            return Ok(Progress::Incomplete);
        };
        rest = after;
        match &mut joined {
            Some(bytes) => bytes.extend_from_slice(fragment),
            None if single.is_empty() => single = fragment,
            None => {
                let mut bytes = Vec::with_capacity(single.len().saturating_add(fragment.len()));
                bytes.extend_from_slice(single);
                bytes.extend_from_slice(fragment);
                joined = Some(bytes);
            }
        }
    }
}

impl ClientHello<'_> {
    /// The same, owning its name.
    pub fn into_owned(self) -> ClientHello<'static> {
        ClientHello {
            sni: self.sni.map(|name| Cow::Owned(name.into_owned())),
            encrypted: self.encrypted,
        }
    }
}

/// A record's fragment, and the bytes after the record.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The next record's fragment and what follows it; `None` when it is not all there.
fn record(input: &[u8]) -> Result<Option<Split<'_>>, HelloError> {
    let Some((&[content, major, minor, high, low], after)) = input.split_first_chunk::<RECORD_HEADER>() else {
        // The first byte alone already tells whether this is TLS at all.
        return match input.first() {
            Some(&content) if content != CONTENT_HANDSHAKE => Err(HelloError::NotHandshake(content)),
            _ => Ok(None),
        };
    };
    if content != CONTENT_HANDSHAKE {
        return Err(HelloError::NotHandshake(content));
    }
    let version = u16::from_be_bytes([major, minor]);
    if !(0x0301..=0x0304).contains(&version) {
        return Err(HelloError::RecordVersion(version));
    }
    let len = usize::from(u16::from_be_bytes([high, low]));
    if len == 0 || len > MAX_RECORD {
        return Err(HelloError::RecordLength(len));
    }
    Ok(after.split_at_checked(len))
}

/// The whole first handshake message's length, header included, once `message`
/// holds it all.
fn message_len(message: &[u8]) -> Result<Option<usize>, HelloError> {
    let Some(&[kind, a, b, c]) = message.first_chunk::<4>() else {
        return Ok(None);
    };
    if kind != CLIENT_HELLO {
        return Err(HelloError::NotClientHello(kind));
    }
    let len = usize::try_from(u32::from_be_bytes([0, a, b, c]))
        .unwrap_or(usize::MAX)
        .saturating_add(4);
    if len > MAX_RECORD {
        return Err(HelloError::TooLarge(len));
    }
    Ok((message.len() >= len).then_some(len))
}

/// The ClientHello's body, past the handshake header.
fn parse_body(body: &[u8]) -> Result<ClientHello<'_>, HelloError> {
    let mut hello = Reader(body);
    hello.take(2 + 32)?; // legacy_version, random
    if hello.vec8()?.len() > 32 {
        return Err(HelloError::Malformed("a session id longer than 32 bytes"));
    }
    let suites = hello.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("the cipher suites are empty or of odd length"));
    }
    if hello.vec8()?.is_empty() {
        return Err(HelloError::Malformed("no compression method"));
    }
    let mut found = ClientHello {
        sni: None,
        encrypted: false,
    };
    if hello.is_empty() {
        return Ok(found); // No extensions at all (TLS 1.2 allows it).
    }
    let mut extensions = Reader(hello.vec16()?);
    if !hello.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        match kind {
            EXT_SERVER_NAME if found.sni.is_some() => {
                return Err(HelloError::Malformed("two server_name extensions"));
            }
            EXT_SERVER_NAME => found.sni = Some(Cow::Borrowed(server_name(data)?)),
            EXT_ECH | EXT_ESNI => found.encrypted = true,
            _ => {}
        }
    }
    Ok(found)
}

/// The one host name of a `server_name` extension.
fn server_name(data: &[u8]) -> Result<&str, HelloError> {
    let mut extension = Reader(data);
    let mut list = Reader(extension.vec16()?);
    if !extension.is_empty() {
        return Err(HelloError::Malformed("bytes after the server name list"));
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8()?;
        let value = list.vec16()?;
        if kind != NAME_TYPE_HOST {
            return Err(HelloError::Malformed("a server name that is not a host name"));
        }
        if name.is_some() {
            return Err(HelloError::Malformed("two host names in server_name"));
        }
        name = Some(host_name(value)?);
    }
    name.ok_or(HelloError::Malformed("an empty server name list"))
}

/// A host name of letters, digits, `-` and `.`, 1 to 254 bytes.
fn host_name(bytes: &[u8]) -> Result<&str, HelloError> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'.';
    if bytes.is_empty() || bytes.len() > MAX_HOST_NAME || !bytes.iter().all(plain) {
        return Err(HelloError::Malformed(
            "the host name is empty, too long or not a DNS name",
        ));
    }
    std::str::from_utf8(bytes).map_err(|_| HelloError::Malformed("the host name is not ASCII"))
}

/// A cursor over bytes; every read checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        let (head, tail) = self
            .0
            .split_at_checked(n)
            .ok_or(HelloError::Malformed("a field runs past its end"))?;
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        let (&byte, tail) = self
            .0
            .split_first()
            .ok_or(HelloError::Malformed("a field runs past its end"))?;
        self.0 = tail;
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let (&bytes, tail) = self
            .0
            .split_first_chunk::<2>()
            .ok_or(HelloError::Malformed("a field runs past its end"))?;
        self.0 = tail;
        Ok(u16::from_be_bytes(bytes))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self) -> Result<&'a [u8], HelloError> {
        let len = self.u8()?;
        self.take(usize::from(len))
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self) -> Result<&'a [u8], HelloError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A ClientHello body with these extensions (type, data).
    fn body(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend([7; 32]); // random
        body.push(0); // no session id
        body.extend([0, 2, 0x13, 0x01]); // one cipher suite
        body.extend([1, 0]); // null compression
        let mut all = Vec::new();
        for (kind, data) in extensions {
            all.extend(kind.to_be_bytes());
            all.extend((data.len() as u16).to_be_bytes());
            all.extend(data);
        }
        body.extend((all.len() as u16).to_be_bytes());
        body.extend(all);
        body
    }

    /// `server_name` data holding these (type, name) entries.
    fn names(entries: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in entries {
            list.push(*kind);
            list.extend((name.len() as u16).to_be_bytes());
            list.extend(*name);
        }
        let mut data = (list.len() as u16).to_be_bytes().to_vec();
        data.extend(list);
        data
    }

    fn sni(name: &str) -> (u16, Vec<u8>) {
        (EXT_SERVER_NAME, names(&[(0, name.as_bytes())]))
    }

    /// A handshake message around `body`.
    fn message(body: &[u8]) -> Vec<u8> {
        let mut message = vec![CLIENT_HELLO];
        message.extend(&(body.len() as u32).to_be_bytes()[1..]);
        message.extend(body);
        message
    }

    /// `message` in records of at most `size` bytes each.
    fn records(message: &[u8], size: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        for fragment in message.chunks(size) {
            wire.extend([CONTENT_HANDSHAKE, 3, 1]);
            wire.extend((fragment.len() as u16).to_be_bytes());
            wire.extend(fragment);
        }
        wire
    }

    fn hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        records(&message(&body(extensions)), MAX_RECORD)
    }

    fn complete(wire: &[u8]) -> ClientHello<'_> {
        match parse(wire) {
            Ok(Progress::Complete(hello)) => hello,
            other => panic!("not a complete hello: {other:?}"),
        }
    }

    #[test]
    fn the_sni_is_read_from_one_record_without_copying() {
        let wire = hello(&[(10, vec![0, 2, 0, 29]), sni("api.stripe.com"), (43, vec![2, 3, 4])]);
        let found = complete(&wire);
        assert_eq!(found.sni.as_deref(), Some("api.stripe.com"));
        assert!(matches!(found.sni, Some(Cow::Borrowed(_))));
        assert!(!found.encrypted);
    }

    #[test]
    fn a_hello_spanning_records_is_reassembled_and_partial_input_asks_for_more() {
        let message = message(&body(&[sni("Api.Stripe.com.")]));
        for size in [1, 7, 40, message.len()] {
            let wire = records(&message, size);
            assert_eq!(
                complete(&wire).sni.as_deref(),
                Some("Api.Stripe.com."),
                "records of {size}"
            );
            for cut in 0..wire.len() {
                assert_eq!(
                    parse(&wire[..cut]),
                    Ok(Progress::Incomplete),
                    "records of {size}, cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn no_sni_and_encrypted_hellos_are_told_apart() {
        assert_eq!(complete(&hello(&[])).sni, None);
        let mut no_extensions = body(&[]);
        no_extensions.truncate(no_extensions.len() - 2);
        assert_eq!(complete(&records(&message(&no_extensions), MAX_RECORD)).sni, None);
        let ech = hello(&[sni("public.example"), (EXT_ECH, vec![0; 40])]);
        let found = complete(&ech);
        assert!(found.encrypted);
        assert_eq!(found.sni.as_deref(), Some("public.example"));
        assert!(complete(&hello(&[(EXT_ESNI, vec![1])])).encrypted);
    }

    #[test]
    fn malformed_hellos_are_errors() {
        let two_names = (EXT_SERVER_NAME, names(&[(0, b"a.example"), (0, b"b.example")]));
        let other_type = (EXT_SERVER_NAME, names(&[(1, b"a.example")]));
        let cases: Vec<(&str, Vec<u8>, HelloError)> = vec![
            (
                "two server_name extensions",
                hello(&[sni("a.example"), sni("b.example")]),
                HelloError::Malformed("two server_name extensions"),
            ),
            (
                "two host names",
                hello(&[two_names]),
                HelloError::Malformed("two host names in server_name"),
            ),
            (
                "a name of another type",
                hello(&[other_type]),
                HelloError::Malformed("a server name that is not a host name"),
            ),
            (
                "an empty list",
                hello(&[(EXT_SERVER_NAME, vec![0, 0])]),
                HelloError::Malformed("an empty server name list"),
            ),
            (
                "a name with a NUL",
                hello(&[(EXT_SERVER_NAME, names(&[(0, b"a.example\0.evil")]))]),
                HelloError::Malformed("the host name is empty, too long or not a DNS name"),
            ),
            (
                "an IPv6 literal",
                hello(&[(EXT_SERVER_NAME, names(&[(0, b"[::1]")]))]),
                HelloError::Malformed("the host name is empty, too long or not a DNS name"),
            ),
            (
                "an extension running past the list",
                hello(&[(EXT_SERVER_NAME, vec![0, 40, 0, 0, 3, b'a'])]),
                HelloError::Malformed("a field runs past its end"),
            ),
            (
                "plain HTTP",
                b"GET / HTTP/1.1\r\n\r\n".to_vec(),
                HelloError::NotHandshake(b'G'),
            ),
            ("an alert", vec![21, 3, 3, 0, 2, 2, 40], HelloError::NotHandshake(21)),
            ("SSL 2 version", vec![22, 2, 0, 0, 5], HelloError::RecordVersion(0x0200)),
            ("an empty record", vec![22, 3, 1, 0, 0], HelloError::RecordLength(0)),
            (
                "an overlong record",
                vec![22, 3, 1, 0x40, 1],
                HelloError::RecordLength(16385),
            ),
            (
                "a ServerHello",
                records(&[2, 0, 0, 1, 0], 100),
                HelloError::NotClientHello(2),
            ),
            (
                "a hello over 16 KiB",
                records(&[1, 0, 0x40, 0], 100),
                HelloError::TooLarge(16388),
            ),
        ];
        for (what, wire, expected) in cases {
            assert_eq!(parse(&wire), Err(expected), "{what}");
        }
        let mut trailing = body(&[sni("a.example")]);
        trailing.push(0);
        assert_eq!(
            parse(&records(&message(&trailing), MAX_RECORD)),
            Err(HelloError::Malformed("bytes after the extensions"))
        );
        // A body cut anywhere (its vectors' lengths left as they were) is malformed,
        // except right before the extensions: a hello may have none.
        let whole = body(&[sni("a.example")]);
        let before_extensions = 2 + 32 + 1 + 4 + 2;
        for cut in 0..whole.len() {
            let wire = records(&message(&whole[..cut]), MAX_RECORD);
            let parsed = parse(&wire);
            if cut == before_extensions {
                assert_eq!(
                    parsed.map(|p| p
                        == Progress::Complete(ClientHello {
                            sni: None,
                            encrypted: false
                        })),
                    Ok(true)
                );
            } else {
                assert!(parsed.is_err(), "body cut at {cut}: {parsed:?}");
            }
        }
    }

    #[test]
    fn reading_more_never_changes_a_verdict() {
        let mut wires = vec![
            hello(&[sni("api.stripe.com")]),
            records(&message(&body(&[sni("a.example"), (EXT_ECH, vec![1; 9])])), 5),
            hello(&[sni("a.example"), sni("b.example")]),
            records(&[1, 0, 0x40, 0], 2),
            rustls_hello("api.stripe.com", true),
            b"\x16\x03\x09\x00\x05hello".to_vec(),
        ];
        // Every single-byte corruption of a real hello, too.
        let real = rustls_hello("x.example", true);
        for at in (0..real.len()).step_by(7) {
            let mut corrupt = real.clone();
            corrupt[at] ^= 0x5a;
            wires.push(corrupt);
        }
        for wire in &wires {
            let whole = parse(wire);
            for cut in 0..wire.len() {
                match parse(&wire[..cut]) {
                    Ok(Progress::Incomplete) => {}
                    prefix => assert_eq!(prefix, whole, "cut at {cut} of {wire:?}"),
                }
            }
        }
    }

    #[test]
    fn alerts_are_fatal_plaintext_records() {
        assert_eq!(Alert::UnrecognizedName.record(), [21, 3, 3, 0, 2, 2, 112]);
        assert_eq!(Alert::HandshakeFailure.record(), [21, 3, 3, 0, 2, 2, 40]);
    }

    /// The first flight of a real rustls client.
    fn rustls_hello(name: &str, enable_sni: bool) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_sni = enable_sni;
        let name = rustls_pki_types::ServerName::try_from(name.to_owned()).unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    #[test]
    fn a_rustls_client_hello_names_its_server() {
        let wire = rustls_hello("api.stripe.com", true);
        assert_eq!(complete(&wire).sni.as_deref(), Some("api.stripe.com"));
        assert!(!complete(&wire).encrypted);
        assert_eq!(complete(&rustls_hello("api.stripe.com", false)).sni, None);
        for cut in [0, 1, 4, 5, 6, wire.len() / 2, wire.len() - 1] {
            assert_eq!(parse(&wire[..cut]), Ok(Progress::Incomplete), "cut at {cut}");
        }
    }
}
