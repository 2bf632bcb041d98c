//! The first bytes of a GGUF file: magic `GGUF`, then the format version as a
//! little-endian u32. Checked on import so that a wrong file (an archive, a
//! safetensors file, a truncated download) gets a clear error before anything
//! else is said about it.

/// Bytes needed by [`check_gguf_header`].
pub const GGUF_HEADER_LEN: usize = 8;

/// The GGUF format versions llama.cpp reads.
const SUPPORTED: [u32; 2] = [2, 3];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    #[error("it is shorter than a gguf header ({GGUF_HEADER_LEN} bytes): the file is empty or cut short; get it again")]
    TooShort,
    #[error("it is not a gguf model (it does not start with 'GGUF'): import the .gguf file itself, not an archive, a wheel or another model format")]
    NotGguf,
    #[error("it is gguf version {0}, and only versions 2 and 3 are supported: use a gguf file made by a current llama.cpp")]
    Version(u32),
}

/// Check the header at the start of `head`; returns the GGUF version.
pub fn check_gguf_header(head: &[u8]) -> Result<u32, GgufError> {
    let (Some(magic), Some(version)) = (head.get(..4), head.get(4..GGUF_HEADER_LEN)) else {
        return Err(GgufError::TooShort);
    };
    if magic != b"GGUF" {
        return Err(GgufError::NotGguf);
    }
    let version = u32::from_le_bytes([version[0], version[1], version[2], version[3]]);
    if SUPPORTED.contains(&version) {
        Ok(version)
    } else {
        Err(GgufError::Version(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(check_gguf_header(b"GGUF\x03\0\0\0rest"), Ok(3));
        assert_eq!(check_gguf_header(b"GGUF\x02\0\0\0"), Ok(2));
        assert_eq!(
            check_gguf_header(b"GGUF\x01\0\0\0"),
            Err(GgufError::Version(1))
        );
        // A big-endian GGUF reads as a huge version.
        assert_eq!(
            check_gguf_header(b"GGUF\0\0\0\x03"),
            Err(GgufError::Version(0x0300_0000))
        );
        assert_eq!(
            check_gguf_header(b"PK\x03\x04\0\0\0\0"),
            Err(GgufError::NotGguf)
        );
        assert_eq!(check_gguf_header(b"GGUF\x03\0\0"), Err(GgufError::TooShort));
        assert_eq!(check_gguf_header(b""), Err(GgufError::TooShort));
    }
}
