//! Certificate serial numbers, as the CA, the revocation list and the CRL name them.

use std::fmt;
use std::str::FromStr;

/// A certificate serial number: big-endian bytes without leading zeros, written as
/// lower-case hex (no separators) everywhere a person sees it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Box<[u8]>);

/// The longest serial RFC 5280 allows.
const MAX_SERIAL_BYTES: usize = 20;

impl Serial {
    /// Takes the raw big-endian bytes of a serial (as found in a certificate).
    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(bytes.get(start..).unwrap_or_default().into())
    }

    /// The big-endian bytes, without leading zeros.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// A serial given on the command line or over the API could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid serial `{input}`: {reason}; write the serial as hex, e.g. `5a0c…` as `palisade ca inspect` prints it")]
pub struct SerialError {
    input: String,
    reason: &'static str,
}

impl FromStr for Serial {
    type Err = SerialError;

    /// Reads hex, optionally with `:` separators (as `openssl x509 -text` prints).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| SerialError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let digits: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
        if digits.is_empty() {
            return Err(err("it is empty"));
        }
        if digits.len() > MAX_SERIAL_BYTES * 2 + 2 {
            return Err(err("it is longer than 20 bytes"));
        }
        let mut nibbles = Vec::with_capacity(digits.len() + 1);
        if digits.len() % 2 == 1 {
            nibbles.push(0);
        }
        for d in digits {
            nibbles.push(match d {
                b'0'..=b'9' => d - b'0',
                b'a'..=b'f' => d - b'a' + 10,
                b'A'..=b'F' => d - b'A' + 10,
                _ => return Err(err("it holds a character that is not a hex digit")),
            });
        }
        let bytes: Vec<u8> = nibbles
            .chunks(2)
            .map(|p| p.iter().fold(0, |acc, n| acc << 4 | n))
            .collect();
        let serial = Self::from_be_bytes(&bytes);
        if serial.0.len() > MAX_SERIAL_BYTES {
            return Err(err("it is longer than 20 bytes"));
        }
        Ok(serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_ignores_leading_zeros_and_colons() {
        let s: Serial = "00:5A:0c".parse().unwrap();
        assert_eq!(s.as_bytes(), &[0x5a, 0x0c]);
        assert_eq!(s.to_string(), "5a0c");
        assert_eq!("5a0c".parse::<Serial>().unwrap(), s);
        assert_eq!("a0c".parse::<Serial>().unwrap().as_bytes(), &[0x0a, 0x0c]);
        assert_eq!(Serial::from_be_bytes(&[0, 0, 1]).to_string(), "01");
    }

    #[test]
    fn rejects_what_is_not_a_serial() {
        for bad in ["", ":", "xyz", "5a 0c", &"ab".repeat(21)] {
            assert!(bad.parse::<Serial>().is_err(), "{bad:?} must be refused");
        }
    }
}
