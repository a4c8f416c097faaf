//! The digests HASH offers, whole or streamed.

use std::io;

/// Digest algorithms for HASH (draft-bryan-ftpext-hash §3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgo {
    /// SHA-256, the default.
    Sha256,
    /// SHA-512.
    Sha512,
    /// SHA-1.
    Sha1,
    /// MD5.
    Md5,
    /// CRC-32 (IEEE).
    Crc32,
}

impl HashAlgo {
    /// Every algorithm, in the order FEAT lists them.
    pub const ALL: [HashAlgo; 5] = [
        HashAlgo::Sha256,
        HashAlgo::Sha512,
        HashAlgo::Sha1,
        HashAlgo::Md5,
        HashAlgo::Crc32,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "SHA-256",
            HashAlgo::Sha512 => "SHA-512",
            HashAlgo::Sha1 => "SHA-1",
            HashAlgo::Md5 => "MD5",
            HashAlgo::Crc32 => "CRC32",
        }
    }

    /// Looks an algorithm up by its wire name, case-insensitively.
    pub fn from_name(name: &str) -> Option<HashAlgo> {
        HashAlgo::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// A digest in progress, fed chunk by chunk: for bytes that arrive as a stream.
    pub fn start(self) -> Digester {
        use sha2::Digest as _;
        Digester(match self {
            HashAlgo::Sha256 => State::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => State::Sha512(sha2::Sha512::new()),
            HashAlgo::Sha1 => State::Sha1(sha1::Sha1::new()),
            HashAlgo::Md5 => State::Md5(md5::Md5::new()),
            HashAlgo::Crc32 => State::Crc32(crc32fast::Hasher::new()),
        })
    }

    /// Digests everything `reader` yields.
    ///
    /// # Errors
    /// A read error.
    pub fn digest(self, reader: &mut dyn io::Read) -> io::Result<String> {
        let mut digester = self.start();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(digester.finish());
            }
            digester.update(&buf[..n]);
        }
    }
}

/// How much a digest reads at a time.
pub const CHUNK: usize = 256 * 1024;

/// A digest being computed; [`Digester::finish`] gives it as lowercase hex.
pub struct Digester(State);

enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    Sha1(sha1::Sha1),
    Md5(md5::Md5),
    Crc32(crc32fast::Hasher),
}

impl Digester {
    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest as _;
        match &mut self.0 {
            State::Sha256(d) => d.update(data),
            State::Sha512(d) => d.update(data),
            State::Sha1(d) => d.update(data),
            State::Md5(d) => d.update(data),
            State::Crc32(d) => d.update(data),
        }
    }

    /// The digest of everything fed, as lowercase hex (CRC-32 as eight digits).
    pub fn finish(self) -> String {
        use sha2::Digest as _;
        match self.0 {
            State::Sha256(d) => hex::encode(d.finalize()),
            State::Sha512(d) => hex::encode(d.finalize()),
            State::Sha1(d) => hex::encode(d.finalize()),
            State::Md5(d) => hex::encode(d.finalize()),
            State::Crc32(d) => format!("{:08x}", d.finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_digests_equal_whole_ones() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for algo in HashAlgo::ALL {
            let whole = algo.digest(&mut &data[..]).expect("reads from memory");
            let mut streamed = algo.start();
            for chunk in data.chunks(777) {
                streamed.update(chunk);
            }
            assert_eq!(streamed.finish(), whole, "{}", algo.name());
        }
        assert_eq!(
            HashAlgo::Sha256.start().finish(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            HashAlgo::Crc32
                .digest(&mut &b"123456789"[..])
                .expect("memory"),
            "cbf43926"
        );
    }
}
