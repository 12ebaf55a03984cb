//! Unit's variables (`nxt_var.c`, `nxt_http_variables.c`) and the strings that hold
//! them: `$name` or `${name}`, where a name is ASCII letters and `_`. Templates are
//! parsed once, when the config is applied; unknown names are a config error.
//!
//! In access log lines a variable without a value (a header the request lacks) renders
//! as `-`, as in Unit; elsewhere it renders empty.

use thiserror::Error;

/// One variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    Dollar,
    Method,
    /// The request-target as the client sent it.
    RequestUri,
    /// The decoded, normalised path (after any `rewrite`).
    Uri,
    Host,
    /// `https` on a TLS connection, else `http`.
    Scheme,
    RemoteAddr,
    TimeLocal,
    RequestLine,
    RequestId,
    RequestTime,
    Status,
    BodyBytesSent,
    ResponseConnection,
    ResponseContentLength,
    ResponseTransferEncoding,
    /// A request header, named in lower case with `_` for `-`.
    Header(Box<[u8]>),
    /// A query argument, by its decoded name.
    Arg(Box<[u8]>),
    Cookie(Box<[u8]>),
    /// A response header, named in lower case with `_` standing for `-`.
    ResponseHeader(Box<[u8]>),
}

impl Var {
    fn from_name(name: &str) -> Option<Var> {
        Some(match name {
            "dollar" => Var::Dollar,
            "method" => Var::Method,
            "request_uri" => Var::RequestUri,
            "uri" => Var::Uri,
            "host" => Var::Host,
            "scheme" => Var::Scheme,
            "remote_addr" => Var::RemoteAddr,
            "time_local" => Var::TimeLocal,
            "request_line" => Var::RequestLine,
            "request_id" => Var::RequestId,
            "request_time" => Var::RequestTime,
            "status" => Var::Status,
            "body_bytes_sent" => Var::BodyBytesSent,
            "response_header_connection" => Var::ResponseConnection,
            "response_header_content_length" => Var::ResponseContentLength,
            "response_header_transfer_encoding" => Var::ResponseTransferEncoding,
            _ => {
                let field = |prefix: &str| {
                    name.strip_prefix(prefix)
                        .filter(|rest| !rest.is_empty())
                        .map(|rest| rest.as_bytes().to_vec().into_boxed_slice())
                };
                if let Some(header) = field("response_header_") {
                    Var::ResponseHeader(header.to_ascii_lowercase().into_boxed_slice())
                } else if let Some(header) = field("header_") {
                    let name: Vec<u8> = header
                        .iter()
                        .map(|&b| {
                            if b == b'_' {
                                b'-'
                            } else {
                                b.to_ascii_lowercase()
                            }
                        })
                        .collect();
                    Var::Header(name.into_boxed_slice())
                } else if let Some(arg) = field("arg_") {
                    Var::Arg(arg)
                } else if let Some(cookie) = field("cookie_") {
                    Var::Cookie(cookie)
                } else {
                    return None;
                }
            }
        })
    }

    /// Whether the value depends on the response (only known once it is sent).
    pub fn is_response_side(&self) -> bool {
        matches!(
            self,
            Var::Status
                | Var::BodyBytesSent
                | Var::ResponseConnection
                | Var::ResponseContentLength
                | Var::ResponseTransferEncoding
                | Var::ResponseHeader(_)
        )
    }
}

/// Why a template is invalid (Unit's wording).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("invalid variable at position {0}")]
    Syntax(usize),
    #[error("unknown variable \"{0}\"")]
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Box<[u8]>),
    Var(Var),
}

/// A string with variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Box<[Part]>,
}

/// Where variables get their values.
pub trait Values {
    /// Appends the value of `var`; `false` when it has none.
    fn write(&self, var: &Var, out: &mut Vec<u8>) -> bool;
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let bytes = text.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                literal.push(bytes[i]);
                i += 1;
                continue;
            }
            let at = i;
            i += 1;
            let braced = bytes.get(i) == Some(&b'{');
            if braced {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
                i += 1;
            }
            let name = &text[start..i];
            if name.is_empty() {
                return Err(TemplateError::Syntax(at));
            }
            if braced {
                if bytes.get(i) != Some(&b'}') {
                    return Err(TemplateError::Syntax(at));
                }
                i += 1;
            }
            let var = Var::from_name(name).ok_or_else(|| TemplateError::Unknown(name.into()))?;
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal).into_boxed_slice()));
            }
            parts.push(Part::Var(var));
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal.into_boxed_slice()));
        }
        Ok(Template {
            parts: parts.into_boxed_slice(),
        })
    }

    /// The text of a template without variables.
    pub fn constant(&self) -> Option<&[u8]> {
        match &*self.parts {
            [] => Some(b""),
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Text(_) => None,
        })
    }

    /// Appends the rendered template; in `logging` mode a missing value is `-`.
    pub fn render_into(&self, values: &dyn Values, logging: bool, out: &mut Vec<u8>) {
        for part in &*self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text),
                Part::Var(var) => {
                    if !values.write(var, out) && logging {
                        out.push(b'-');
                    }
                }
            }
        }
    }

    pub fn render(&self, values: &dyn Values) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_into(values, false, &mut out);
        out
    }
}

/// Unit's truth of an `if` value: anything but empty, `0`, `false`, `null` and
/// `undefined`.
pub fn is_true(value: &[u8]) -> bool {
    !matches!(value, b"" | b"0" | b"false" | b"null" | b"undefined")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Values for Fixed {
        fn write(&self, var: &Var, out: &mut Vec<u8>) -> bool {
            match var {
                Var::Uri => out.extend_from_slice(b"/x"),
                Var::Dollar => out.push(b'$'),
                Var::Header(name) if &**name == b"x-a" => out.extend_from_slice(b"A"),
                _ => return false,
            }
            true
        }
    }

    fn render(text: &str, logging: bool) -> String {
        let template = Template::parse(text).expect("parses");
        let mut out = Vec::new();
        template.render_into(&Fixed, logging, &mut out);
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn forms_of_variables() {
        assert_eq!(render("a$uri", false), "a/x");
        assert_eq!(render("${uri}b", false), "/xb");
        assert_eq!(render("$uri.html", false), "/x.html");
        assert_eq!(render("$header_X_A", false), "A");
        assert_eq!(render("$dollar$uri", false), "$/x");
        assert_eq!(render("[$header_none]", false), "[]");
        assert_eq!(render("[$header_none]", true), "[-]");
        // A name is letters and '_' only: the digit is text.
        assert_eq!(render("$uri1", false), "/x1");
    }

    #[test]
    fn invalid_templates() {
        assert_eq!(Template::parse("a$"), Err(TemplateError::Syntax(1)));
        assert_eq!(Template::parse("${uri"), Err(TemplateError::Syntax(0)));
        assert_eq!(Template::parse("$1"), Err(TemplateError::Syntax(0)));
        assert_eq!(Template::parse("${}"), Err(TemplateError::Syntax(0)));
        assert_eq!(
            Template::parse("/$blah"),
            Err(TemplateError::Unknown("blah".into()))
        );
        assert_eq!(
            Template::parse("$header_"),
            Err(TemplateError::Unknown("header_".into()))
        );
    }

    #[test]
    fn constants_and_truth() {
        assert_eq!(
            Template::parse("/a").expect("parses").constant(),
            Some(&b"/a"[..])
        );
        assert_eq!(
            Template::parse("").expect("parses").constant(),
            Some(&b""[..])
        );
        assert_eq!(Template::parse("$uri").expect("parses").constant(), None);
        for falsy in ["", "0", "false", "null", "undefined"] {
            assert!(!is_true(falsy.as_bytes()));
        }
        assert!(is_true(b"1"));
        assert!(is_true(b"no"));
    }
}
