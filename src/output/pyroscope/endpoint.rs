//! Where the Pyroscope backend is: `--pyroscope URL`, or Netto's `-a HOST
//! -p PORT`.

use std::net::Ipv6Addr;

/// Default port of a Pyroscope server (Netto's `-p` default too), for
/// `http://` URLs and URLs without a scheme.
pub const DEFAULT_PORT: u16 = 4040;
/// Default port of `https://` URLs.
pub const DEFAULT_TLS_PORT: u16 = 443;

/// How the backend is spoken to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// `SCHEME://HOST[:PORT][/PREFIX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path the backend is mounted under, without a trailing `/` ("" for the root).
    pub prefix: String,
}

/// The URL as it may be shown in a message: credentials before an `@` are
/// masked, so a mistaken `https://user:token@host` never reaches a
/// terminal or a log.
fn shown(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

/// A host name (letters, digits, `-`, `_`, `.`) or an IPv4 address: what
/// can stand in a URL's authority without escaping.
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A path prefix: the characters RFC 3986 allows in a path, `%` escapes included.
fn valid_prefix(path: &str) -> bool {
    path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
            )
    })
}

impl Endpoint {
    /// Parses `--pyroscope`: `http://` (the default without a scheme, port
    /// 4040 by default) or `https://` (port 443 by default).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let shown = shown(url);
        let (scheme, rest) = match url.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((s, _)) => {
                return Err(format!(
                    "`{shown}`: the scheme must be http:// or https://, not {s}://"
                ))
            }
            None => (Scheme::Http, url),
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(format!(
                "`{shown}`: credentials in the URL are not accepted (they would show in `ps` \
                 and in shell history); give --pyroscope-user USER and the password with \
                 --pyroscope-password-file FILE or NETLENS_PYROSCOPE_PASSWORD"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!("`{shown}`: no query or fragment allowed"));
        }
        if !valid_prefix(path) {
            return Err(format!(
                "`{shown}`: the path has characters that need %-escaping"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [::1]:4040
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{shown}`: unclosed [ in the address"))?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!("`{shown}`: `{host}` is not an IPv6 address"));
            }
            let port =
                match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(|| {
                        format!("`{shown}`: expected :PORT after the IPv6 address")
                    })?),
                };
            (host, port)
        } else {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if !valid_host_name(host) {
                return Err(format!(
                    "`{shown}`: expected {}://HOST[:PORT][/PATH] with a host name or address",
                    scheme.as_str()
                ));
            }
            (host, port)
        };
        let port = match port {
            None if scheme == Scheme::Https => DEFAULT_TLS_PORT,
            None => DEFAULT_PORT,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("`{shown}`: `{p}` is not a port number"))?,
        };
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    /// Netto's spelling: `-a HOST -p PORT`, plain http.
    pub fn from_host_port(host: &str, port: u16) -> Result<Endpoint, String> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if !(valid_host_name(bare) || bare.parse::<Ipv6Addr>().is_ok()) {
            return Err(format!(
                "-a/--address: `{}` is not a host name or address",
                shown(host)
            ));
        }
        Ok(Endpoint {
            scheme: Scheme::Http,
            host: bare.to_string(),
            port,
            prefix: String::new(),
        })
    }

    /// `HOST:PORT`, the IPv6 address in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The base URL, with the port always written out.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.prefix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (Scheme, String, u16, String) {
        let e = Endpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (e.scheme, e.host, e.port, e.prefix)
    }

    #[test]
    fn http_and_https_urls_with_their_default_ports() {
        use Scheme::*;
        let cases = [
            ("http://127.0.0.1:4040", Http, "127.0.0.1", 4040, ""),
            ("http://pyroscope", Http, "pyroscope", DEFAULT_PORT, ""),
            ("HTTP://pyroscope/", Http, "pyroscope", DEFAULT_PORT, ""),
            (
                "pyro.example:9000/prefix/",
                Http,
                "pyro.example",
                9000,
                "/prefix",
            ),
            ("https://pyro.example", Https, "pyro.example", 443, ""),
            (
                "https://pyro.example:8443/a/b",
                Https,
                "pyro.example",
                8443,
                "/a/b",
            ),
            ("https://[2001:db8::1]", Https, "2001:db8::1", 443, ""),
            ("http://[::1]:4041", Http, "::1", 4041, ""),
            (
                "https://profiles-prod-001.grafana.net",
                Https,
                "profiles-prod-001.grafana.net",
                443,
                "",
            ),
        ];
        for (url, scheme, host, port, prefix) in cases {
            assert_eq!(
                parsed(url),
                (scheme, host.to_string(), port, prefix.to_string()),
                "{url}"
            );
        }
        assert_eq!(
            Endpoint::parse("http://[::1]:4041").unwrap().url(),
            "http://[::1]:4041"
        );
        assert_eq!(
            Endpoint::parse("https://pyro.example/p/").unwrap().url(),
            "https://pyro.example:443/p"
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let err = |url: &str| Endpoint::parse(url).unwrap_err();
        assert!(err("ftp://x:4040").contains("http:// or https://, not ftp://"));
        assert!(err("grpc://x").contains("not grpc://"));
        assert!(err("http://x:port").contains("`port` is not a port number"));
        assert!(err("https://x:0").contains("not a port number"));
        assert!(err("https://x:65536").contains("not a port number"));
        assert!(err("http://:4040").contains("HOST"));
        assert!(err("https://").contains("HOST"));
        assert!(err("http://x/ingest?a=b").contains("no query"));
        assert!(err("http://x?a=b").contains("no query"));
        assert!(err("http://a b/").contains("HOST"));
        assert!(err("http://x/a b").contains("escaping"));
        assert!(err("http://[::1/").contains("unclosed"));
        assert!(err("http://[nope]:1").contains("not an IPv6 address"));
        assert!(err("http://[::1]4040").contains(":PORT"));
        assert!(err("http://::1:4040").contains("HOST"));
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_shown() {
        for url in [
            "https://1234:glc_secret@profiles.example",
            "https://1234:glc_secret@profiles.example/p?x",
            "ftp://1234:glc_secret@profiles.example",
            "1234:glc_secret@profiles.example:4040",
        ] {
            let e = Endpoint::parse(url).unwrap_err();
            assert!(!e.contains("glc_secret"), "{e}");
            assert!(!e.contains("1234"), "{e}");
            assert!(e.contains("***@profiles.example"), "{e}");
        }
        let e = Endpoint::parse("https://u:glc_secret@x").unwrap_err();
        assert!(e.contains("--pyroscope-password-file"), "{e}");
        let e = Endpoint::from_host_port("u:glc_secret@x", 4040).unwrap_err();
        assert!(!e.contains("glc_secret"), "{e}");
    }

    #[test]
    fn nettos_address_and_port() {
        let e = Endpoint::from_host_port("pyroscope", 4040).unwrap();
        assert_eq!(e.url(), "http://pyroscope:4040");
        assert_eq!(
            Endpoint::from_host_port("[::1]", 4041).unwrap().url(),
            "http://[::1]:4041"
        );
        assert!(Endpoint::from_host_port("http://x", 4040).is_err());
        assert!(Endpoint::from_host_port("", 4040).is_err());
    }
}
