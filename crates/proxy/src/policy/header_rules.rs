//! `request_headers` / `response_headers = { set = {...}, remove = [...] }` (nginx
//! `proxy_set_header` and `add_header always`, Caddy `header`, Traefik Headers): `remove`
//! first, then `set` (replacing any value), with the variables `$remote_addr`, `$scheme`,
//! `$host`, `$prefix`, `$request_id`.

use gateway_config::{HeaderRules, HeaderVar, TemplatePart};
use http::{HeaderName, HeaderValue};

/// The values the variables stand for in one request.
pub struct OwnedVars {
    pub remote_addr: String,
    pub scheme: &'static str,
    pub host: String,
    pub prefix: String,
    pub request_id: String,
}

enum Value {
    /// No variable: ready as it is.
    Fixed(HeaderValue),
    Template(Vec<TemplatePart>),
}

/// Compiled rules.
pub struct Rules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Value)>,
}

impl Rules {
    /// From validated rules (a name or value the data plane cannot send was refused by
    /// `check`; one left over is skipped, never a panic).
    pub fn new(r: &HeaderRules) -> Self {
        let remove = r
            .remove
            .iter()
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        let set = r
            .set
            .iter()
            .filter_map(|(n, parts)| {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                let value = match parts.as_slice() {
                    [] => Value::Fixed(HeaderValue::from_static("")),
                    [TemplatePart::Text(t)] => Value::Fixed(HeaderValue::from_str(t).ok()?),
                    _ => Value::Template(parts.clone()),
                };
                Some((name, value))
            })
            .collect();
        Rules { remove, set }
    }

    /// The changes for one request: names to remove, then `(name, value)` to set.
    pub fn resolve(&self, vars: &OwnedVars) -> (&[HeaderName], Vec<(HeaderName, HeaderValue)>) {
        let set = self
            .set
            .iter()
            .filter_map(|(n, v)| {
                let value = match v {
                    Value::Fixed(v) => v.clone(),
                    Value::Template(parts) => {
                        let mut s = String::new();
                        for p in parts {
                            match p {
                                TemplatePart::Text(t) => s.push_str(t),
                                TemplatePart::Var(var) => s.push_str(match var {
                                    HeaderVar::RemoteAddr => &vars.remote_addr,
                                    HeaderVar::Scheme => vars.scheme,
                                    HeaderVar::Host => &vars.host,
                                    HeaderVar::Prefix => &vars.prefix,
                                    HeaderVar::RequestId => &vars.request_id,
                                }),
                            }
                        }
                        // A client's Host with odd bytes makes no header: skipped.
                        HeaderValue::from_str(&s).ok()?
                    }
                };
                Some((n.clone(), value))
            })
            .collect();
        (&self.remove, set)
    }
}
