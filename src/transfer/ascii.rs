//! TYPE A: the line-end conversions of an ASCII transfer, chunk by chunk.

/// TYPE A sending: a bare LF becomes CRLF; an existing CRLF is kept. `last_was_cr` carries the
/// state across chunks; the new state is returned.
pub fn lf_to_crlf(input: &[u8], mut last_was_cr: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(input.len() + input.len() / 16);
    for &b in input {
        if b == b'\n' && !last_was_cr {
            out.push(b'\r');
        }
        out.push(b);
        last_was_cr = b == b'\r';
    }
    last_was_cr
}

/// TYPE A receiving: CRLF becomes LF; a lone CR is kept. A CR at the end of a chunk is held
/// back (`pending_cr`) until the next byte shows whether an LF follows.
pub fn crlf_to_lf(input: &[u8], mut pending_cr: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(input.len());
    for &b in input {
        if pending_cr && b != b'\n' {
            out.push(b'\r');
        }
        pending_cr = b == b'\r';
        if !pending_cr {
            out.push(b);
        }
    }
    pending_cr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_send_conversion_across_chunks() {
        let mut out = Vec::new();
        let state = lf_to_crlf(b"a\nb\r", false, &mut out);
        let state = lf_to_crlf(b"\nc\n", state, &mut out);
        assert!(!state);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
    }

    #[test]
    fn ascii_receive_conversion_across_chunks() {
        let mut out = Vec::new();
        let pending = crlf_to_lf(b"a\r\nb\r", false, &mut out);
        assert!(pending);
        let pending = crlf_to_lf(b"\nc\rd\r", pending, &mut out);
        assert!(pending);
        assert_eq!(out, b"a\nb\nc\rd");
    }
}
