//! sha256 content digests: the only algorithm images use in practice, and a value
//! that is safe to put in a path by construction (64 lowercase hex digits).

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// `sha256:<64 hex>`; anything else is refused with a reason.
    pub fn parse(s: &str) -> Result<Digest, String> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(format!(
                "{s:?} is not a digest (want sha256:<64 hex digits>)"
            ));
        };
        if alg != "sha256" {
            return Err(format!(
                "digest {s:?} uses {alg:?}; only sha256 is supported"
            ));
        }
        Digest::from_hex(hex)
            .ok_or_else(|| format!("{s:?} is not a sha256 digest (want 64 hex digits)"))
    }

    pub fn from_hex(hex: &str) -> Option<Digest> {
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Digest(hex.to_ascii_lowercase()))
    }

    pub fn of(bytes: &[u8]) -> Digest {
        let mut h = Hasher::default();
        h.update(bytes);
        h.finish()
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker images` shows an id.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Digest, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

#[derive(Default, Clone)]
pub struct Hasher {
    h: Sha256,
    pub bytes: u64,
}

impl Hasher {
    pub fn update(&mut self, b: &[u8]) {
        self.h.update(b);
        self.bytes += b.len() as u64;
    }
    pub fn finish(self) -> Digest {
        let out = self.h.finalize();
        let mut s = String::with_capacity(64);
        for b in out.iter() {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }
}

/// Hashes what is read through it.
pub struct HashingReader<R> {
    pub inner: R,
    pub hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::default(),
        }
    }
    /// Read to the end (what a tar reader leaves after its end marker counts too).
    pub fn finish(mut self) -> io::Result<Hasher> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.hasher)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Hashes what is written through it.
pub struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex_digests_are_accepted() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert!(Digest::parse("sha512:00").is_err());
        assert!(Digest::parse("sha256:../../etc/passwd").is_err());
        assert!(Digest::parse(&format!("sha256:{}/", &d.hex()[..63])).is_err());
        assert_eq!(d.short(), "e3b0c44298fc");
    }
}
