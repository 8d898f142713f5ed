//! Percent-encoding of a normalized path before it is sent upstream.

/// Bytes that may appear literally in a path sent upstream (RFC 3986 `pchar` and `/`).
/// Everything else, `%` included, is escaped, so a decoded `%2F`-free path round-trips and
/// no decoded `?` or `#` can change the meaning of the target.
fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// Encodes a normalized path for the upstream request line.
pub fn encode_path(path: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(path.len() + 8);
    for &b in path {
        if is_path_byte(b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::encode_path;

    #[test]
    fn escapes_what_would_change_meaning() {
        assert_eq!(encode_path(b"/a b/c"), "/a%20b/c");
        assert_eq!(encode_path(b"/q?x#y%"), "/q%3Fx%23y%25");
        assert_eq!(encode_path("/é".as_bytes()), "/%C3%A9");
        assert_eq!(encode_path(b"/api/v1:run@x"), "/api/v1:run@x");
    }
}
