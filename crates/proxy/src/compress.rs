//! Response compression: which responses, which encoding, and a streaming encoder.
//!
//! Pingora's own module compresses every `text/*` and `application/*` type and ignores
//! q-values; this one follows the configured type list, minimum length and the client's
//! preferences, and never touches event streams, upgrades, ranges or encoded bodies.

use bytes::Bytes;
use gateway_config::{Algorithm, Compression};
use http::header::{HeaderValue, ACCEPT_ENCODING};
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashSet;
use std::io::Write;

/// The compiled `[compression]` section.
#[derive(Debug, Clone)]
pub struct CompressionPolicy {
    enabled: bool,
    algorithms: Vec<Algorithm>,
    level: u32,
    min_length: u64,
    types: HashSet<String>,
}

impl CompressionPolicy {
    pub fn new(c: &Compression) -> Self {
        CompressionPolicy {
            enabled: c.enabled && !c.algorithms.is_empty(),
            algorithms: c.algorithms.clone(),
            level: c.level,
            min_length: c.min_length,
            types: c.types.iter().cloned().collect(),
        }
    }

    /// True when the response's type is in the list, so `Vary: Accept-Encoding` applies.
    pub fn type_matches(&self, resp: &ResponseHeader) -> bool {
        let Some(ct) = resp
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let mime = ct.split(';').next().unwrap_or("").trim();
        self.types.contains(mime) || self.types.contains(&mime.to_ascii_lowercase())
    }

    /// The encoding to apply, if any. `vary` is set when the answer depends on the request.
    pub fn choose(&self, req: &RequestHeader, resp: &ResponseHeader, vary: &mut bool) -> Option<Algorithm> {
        if !self.enabled || !self.type_matches(resp) {
            return None;
        }
        let status = resp.status.as_u16();
        if status < 200 || status == 204 || status == 206 || status == 304 {
            return None;
        }
        if resp.headers.contains_key(http::header::CONTENT_ENCODING)
            || resp.headers.contains_key(http::header::CONTENT_RANGE)
        {
            return None;
        }
        let no_transform = resp.headers.get_all(http::header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.to_ascii_lowercase().contains("no-transform"))
        });
        if no_transform {
            return None;
        }
        let length = crate::headers::content_length(&resp.headers);
        if length.is_some_and(|n| n < self.min_length) {
            return None;
        }
        *vary = true;
        if req.method == http::Method::HEAD {
            return None;
        }
        negotiate(req.headers.get(ACCEPT_ENCODING)?, &self.algorithms)
    }

    pub fn encoder(&self, alg: Algorithm, size: Option<u64>) -> Encoder {
        Encoder::new(alg, self.level, size)
    }
}

/// Picks the encoding with the highest q-value; ties go to the configured order.
pub fn negotiate(header: &HeaderValue, algorithms: &[Algorithm]) -> Option<Algorithm> {
    let text = header.to_str().ok()?;
    let mut best: Option<(u32, usize, Algorithm)> = None;
    let mut star: Option<u32> = None;
    let mut listed = Vec::new();
    for item in text.split(',') {
        let mut parts = item.split(';');
        let token = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .next()
            .map_or(1000, parse_q);
        if token == "*" {
            star = Some(q);
            continue;
        }
        for (rank, alg) in algorithms.iter().enumerate() {
            if token == alg.token() || (token == "x-gzip" && *alg == Algorithm::Gzip) {
                listed.push(*alg);
                if q > 0 && best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank < br)) {
                    best = Some((q, rank, *alg));
                }
            }
        }
    }
    if let (Some(q), None) = (star, best) {
        if q > 0 {
            return algorithms.iter().find(|a| !listed.contains(a)).copied();
        }
    }
    best.map(|(_, _, a)| a)
}

/// q-values in thousandths, so comparisons are exact.
fn parse_q(s: &str) -> u32 {
    let s = s.trim();
    match s.split_once('.') {
        None => s.parse::<u32>().map_or(0, |n| n.min(1) * 1000),
        Some((int, frac)) => {
            let int: u32 = int.parse().unwrap_or(0);
            if int >= 1 {
                return 1000;
            }
            let mut digits: String = frac.chars().take(3).collect();
            while digits.len() < 3 {
                digits.push('0');
            }
            digits.parse().unwrap_or(0)
        }
    }
}

/// A streaming encoder; output is taken after every chunk.
pub enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Encoder {
    /// `size` is the body length when the upstream declared it: zstd sizes its tables to it
    /// (1 KB: 120 µs -> 26 µs) and brotli its window (not below 2^18: smaller windows take a
    /// much slower path in the brotli crate, 48 KB: 0.7 ms -> 5.5 ms).
    pub fn new(alg: Algorithm, level: u32, size: Option<u64>) -> Self {
        // log2 of the window: enough for the whole body, within brotli's 10..=22.
        let window = size.map_or(22, |n| (64 - n.max(1).leading_zeros()).clamp(18, 22));
        match alg {
            Algorithm::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::with_capacity(8192),
                flate2::Compression::new(level.clamp(1, 9)),
            )),
            Algorithm::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::with_capacity(8192),
                4096,
                level.clamp(1, 11),
                window,
            ))),
            Algorithm::Zstd => {
                match zstd::stream::write::Encoder::new(Vec::with_capacity(8192), level as i32) {
                    Ok(mut e) => {
                        let _ = e.set_pledged_src_size(size);
                        Encoder::Zstd(e)
                    }
                    // Creating a zstd context only fails on allocation failure; gzip still works.
                    Err(_) => Encoder::Gzip(flate2::write::GzEncoder::new(
                        Vec::new(),
                        flate2::Compression::new(6),
                    )),
                }
            }
        }
    }

    fn buffer(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Brotli(e) => e.get_mut(),
            Encoder::Zstd(e) => e.get_mut(),
        }
    }

    /// Feeds a chunk; returns the compressed bytes that are ready. The encoder keeps what it
    /// has not emitted yet (up to its window: 32 KiB for gzip), which gives the best ratio
    /// for a body whose length is known.
    pub fn encode(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => e.write_all(input)?,
            Encoder::Brotli(e) => e.write_all(input)?,
            Encoder::Zstd(e) => e.write_all(input)?,
        }
        Ok(Bytes::from(std::mem::take(self.buffer())))
    }

    /// Feeds a chunk and flushes, so the bytes returned decode to everything fed so far:
    /// each token of a streamed answer (Ollama's NDJSON) reaches the client as it arrives.
    /// gzip: a sync flush (zlib `Z_SYNC_FLUSH`: the pending block ends and an empty stored
    /// block, 4-5 bytes, aligns the stream, RFC 1951 section 3.2.4); brotli:
    /// `BROTLI_OPERATION_FLUSH` (RFC 7932 section 9.2, an empty metadata block); zstd:
    /// `ZSTD_e_flush` (the current block is emitted, RFC 8878 section 3.1.1.2). Each flush
    /// costs a few bytes and some ratio, so this is for bodies without a Content-Length only.
    pub fn encode_flushed(&mut self, input: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(input)?;
                e.flush()?;
            }
            Encoder::Brotli(e) => {
                e.write_all(input)?;
                e.flush()?;
            }
            Encoder::Zstd(e) => {
                e.write_all(input)?;
                e.flush()?;
            }
        }
        Ok(Bytes::from(std::mem::take(self.buffer())))
    }

    /// Ends the stream and returns the remaining bytes.
    pub fn finish(self) -> std::io::Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish()?,
            Encoder::Brotli(e) => e.into_inner(),
            Encoder::Zstd(e) => e.finish()?,
        };
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    const ALL: [Algorithm; 3] = [Algorithm::Gzip, Algorithm::Brotli, Algorithm::Zstd];

    #[test]
    fn q_values_decide() {
        assert_eq!(
            negotiate(&hv("gzip, deflate, br, zstd"), &ALL),
            Some(Algorithm::Gzip)
        );
        assert_eq!(negotiate(&hv("gzip;q=0.5, br"), &ALL), Some(Algorithm::Brotli));
        assert_eq!(
            negotiate(&hv("br;q=0.9, zstd;q=0.95, gzip;q=0.1"), &ALL),
            Some(Algorithm::Zstd)
        );
        assert_eq!(negotiate(&hv("gzip;q=0"), &ALL), None);
        assert_eq!(negotiate(&hv("identity"), &ALL), None);
        assert_eq!(negotiate(&hv("*"), &ALL), Some(Algorithm::Gzip));
        assert_eq!(negotiate(&hv("gzip;q=0, *"), &ALL), Some(Algorithm::Brotli));
        assert_eq!(negotiate(&hv("br"), &[Algorithm::Gzip]), None);
    }

    #[test]
    fn gzip_round_trips_in_chunks() {
        let text = "hello compression ".repeat(2000);
        let mut enc = Encoder::new(Algorithm::Gzip, 6, None);
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(1000) {
            out.extend_from_slice(&enc.encode(chunk).unwrap());
        }
        out.extend_from_slice(&enc.finish().unwrap());
        let mut back = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut back)
            .unwrap();
        assert_eq!(back, text);
        assert!(out.len() < text.len() / 10);
    }

    /// What a client can decode from the bytes received so far (a stream cut anywhere): the
    /// decoders return the data they could decode, then an error for the missing end.
    fn decode_prefix(alg: Algorithm, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = match alg {
            Algorithm::Gzip => flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out),
            Algorithm::Brotli => brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out),
            Algorithm::Zstd => match zstd::stream::read::Decoder::new(bytes) {
                Ok(mut d) => d.read_to_end(&mut out),
                Err(e) => Err(e),
            },
        };
        out
    }

    #[test]
    fn flushed_chunks_decode_as_they_arrive() {
        let lines: Vec<String> = (0..5)
            .map(|i| format!("{{\"model\":\"llama3\",\"response\":\"token {i}\",\"done\":false}}\n"))
            .collect();
        for alg in ALL {
            let mut enc = Encoder::new(alg, 6, None);
            let mut received = Vec::new();
            let mut expected = String::new();
            for line in &lines {
                let out = enc.encode_flushed(line.as_bytes()).unwrap();
                assert!(!out.is_empty(), "{alg:?}: a flush always emits bytes");
                received.extend_from_slice(&out);
                expected.push_str(line);
                let decoded = decode_prefix(alg, &received);
                assert_eq!(
                    String::from_utf8_lossy(&decoded),
                    expected,
                    "{alg:?}: every line fed so far decodes"
                );
            }
            received.extend_from_slice(&enc.finish().unwrap());
            assert_eq!(decode_prefix(alg, &received), expected.as_bytes(), "{alg:?}");
        }
    }

    #[test]
    fn unflushed_chunks_are_held_back() {
        // The Content-Length path: small chunks stay in the encoder until the end.
        let mut enc = Encoder::new(Algorithm::Gzip, 6, Some(100));
        let out = enc.encode(b"{\"a\":1}\n").unwrap();
        assert!(decode_prefix(Algorithm::Gzip, &out).is_empty());
    }

    #[test]
    fn brotli_and_zstd_round_trip() {
        let text = "abc ".repeat(5000);
        for alg in [Algorithm::Brotli, Algorithm::Zstd] {
            let mut enc = Encoder::new(alg, 6, Some(text.len() as u64));
            let mut out = enc.encode(text.as_bytes()).unwrap().to_vec();
            out.extend_from_slice(&enc.finish().unwrap());
            let back = match alg {
                Algorithm::Zstd => zstd::decode_all(&out[..]).unwrap(),
                _ => {
                    let mut v = Vec::new();
                    brotli::Decompressor::new(&out[..], 4096)
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
            };
            assert_eq!(back, text.as_bytes(), "{alg:?}");
        }
    }
}
