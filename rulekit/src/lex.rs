//! Tokens of a rule expression, each with the byte offset it starts at.

use std::net::IpAddr;

use crate::parse::{Error, ErrorKind};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `(`
    Open,
    /// `)`
    Close,
    /// `[`
    OpenList,
    /// `]`
    CloseList,
    /// `,`
    Comma,
    /// `or`, `||`
    Or,
    /// `and`, `&&`
    And,
    /// `not`, `!`
    Not,
    /// A comparison operator.
    Cmp(CmpOp),
    /// `contains`
    Contains,
    /// `in`
    In,
    /// `matches`, `=~`
    Matches,
    /// `true`, `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number with a fraction.
    Float(f64),
    /// A quoted string, unescaped.
    Str(String),
    /// An IPv4 or IPv6 address.
    Ip(IpAddr),
    /// An address with a prefix length.
    Cidr(IpAddr, u8),
    /// `/regex/`, the text between the slashes.
    Regex(String),
    /// A field or function name.
    Ident(String),
    /// The end of the expression.
    End,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    /// `==`, `eq`
    Eq,
    /// `!=`, `ne`
    Ne,
    /// `>`, `gt`
    Gt,
    /// `>=`, `ge`
    Ge,
    /// `<`, `lt`
    Lt,
    /// `<=`, `le`
    Le,
}

impl Tok {
    /// How the token reads in an error message.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::OpenList => "`[`".into(),
            Tok::CloseList => "`]`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Or => "`or`".into(),
            Tok::And => "`and`".into(),
            Tok::Not => "`not`".into(),
            Tok::Cmp(op) => format!("`{}`", op.symbol()),
            Tok::Contains => "`contains`".into(),
            Tok::In => "`in`".into(),
            Tok::Matches => "`matches`".into(),
            Tok::Bool(b) => format!("`{b}`"),
            Tok::Int(n) => format!("`{n}`"),
            Tok::Float(n) => format!("`{n}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Ip(ip) => format!("`{ip}`"),
            Tok::Cidr(ip, len) => format!("`{ip}/{len}`"),
            Tok::Regex(r) => format!("`/{r}/`"),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::End => "the end of the expression".into(),
        }
    }
}

impl CmpOp {
    /// The symbol form.
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
        }
    }
}

/// Splits `src` into tokens with their byte offsets; the last is [`Tok::End`].
pub(crate) fn tokens(src: &str) -> Result<Vec<(Tok, usize)>, Error> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, kind: ErrorKind| Error::at(src, at, kind);
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = bytes.get(i..i + 2).unwrap_or(&[]);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::Open, 1),
            b')' => (Tok::Close, 1),
            b'[' => (Tok::OpenList, 1),
            b']' => (Tok::CloseList, 1),
            b',' => (Tok::Comma, 1),
            _ if two == b"&&" => (Tok::And, 2),
            _ if two == b"||" => (Tok::Or, 2),
            _ if two == b"==" => (Tok::Cmp(CmpOp::Eq), 2),
            _ if two == b"!=" => (Tok::Cmp(CmpOp::Ne), 2),
            _ if two == b">=" => (Tok::Cmp(CmpOp::Ge), 2),
            _ if two == b"<=" => (Tok::Cmp(CmpOp::Le), 2),
            _ if two == b"=~" => (Tok::Matches, 2),
            b'!' => (Tok::Not, 1),
            b'>' => (Tok::Cmp(CmpOp::Gt), 1),
            b'<' => (Tok::Cmp(CmpOp::Lt), 1),
            b'"' | b'\'' => {
                let (s, len) = string(src, i)?;
                (Tok::Str(s), len)
            }
            b'/' => {
                let (r, len) = regex(src, i)?;
                (Tok::Regex(r), len)
            }
            _ if is_word_start(c, bytes.get(i + 1).copied()) => {
                let len = bytes[i..]
                    .iter()
                    .position(|&b| !is_word(b))
                    .unwrap_or(bytes.len() - i);
                (word(&src[i..i + len]).map_err(|kind| err(i, kind))?, len)
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(err(i, ErrorKind::UnexpectedChar(ch)));
            }
        };
        out.push((tok, start));
        i += len;
    }
    out.push((Tok::End, src.len()));
    Ok(out)
}

fn is_word_start(c: u8, next: Option<u8>) -> bool {
    c.is_ascii_alphanumeric()
        || c == b'_'
        || (c == b':' && next == Some(b':'))
        || (c == b'-' && next.is_some_and(|n| n.is_ascii_digit()))
}

/// Characters of a word: field names (`http.req.headers.x-api-key`), numbers,
/// addresses and CIDRs (`fe80::1/64`).
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-' | b':' | b'/')
}

/// Classifies a word.
fn word(w: &str) -> Result<Tok, ErrorKind> {
    let tok = match w.to_ascii_lowercase().as_str() {
        "or" => Tok::Or,
        "and" => Tok::And,
        "not" => Tok::Not,
        "eq" => Tok::Cmp(CmpOp::Eq),
        "ne" => Tok::Cmp(CmpOp::Ne),
        "gt" => Tok::Cmp(CmpOp::Gt),
        "ge" => Tok::Cmp(CmpOp::Ge),
        "lt" => Tok::Cmp(CmpOp::Lt),
        "le" => Tok::Cmp(CmpOp::Le),
        "contains" => Tok::Contains,
        "in" => Tok::In,
        "matches" => Tok::Matches,
        "true" => Tok::Bool(true),
        "false" => Tok::Bool(false),
        _ => return value_word(w),
    };
    Ok(tok)
}

fn value_word(w: &str) -> Result<Tok, ErrorKind> {
    if let Ok(n) = w.parse::<i64>() {
        return Ok(Tok::Int(n));
    }
    if w.starts_with(|c: char| c.is_ascii_digit() || c == '-')
        && !w.contains(':')
        && w.bytes().filter(|&b| b == b'.').count() == 1
        && let Ok(n) = w.parse::<f64>()
    {
        return Ok(Tok::Float(n));
    }
    if let Some((addr, len)) = w.split_once('/') {
        let ip: IpAddr = addr.parse().map_err(|_| ErrorKind::BadCidr(w.to_owned()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        return match len.parse::<u8>() {
            Ok(len) if len <= max => Ok(Tok::Cidr(ip, len)),
            _ => Err(ErrorKind::BadCidr(w.to_owned())),
        };
    }
    if let Ok(ip) = w.parse::<IpAddr>() {
        return Ok(Tok::Ip(ip));
    }
    let ident = w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && !w.contains(':')
        && !w.ends_with('.')
        && !w.contains("..");
    if ident {
        Ok(Tok::Ident(w.to_owned()))
    } else {
        Err(ErrorKind::BadWord(w.to_owned()))
    }
}

/// A quoted string at `start`: its unescaped text and its length in bytes.
fn string(src: &str, start: usize) -> Result<(String, usize), Error> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, off + 2)),
            '\\' => {
                let Some((esc_off, e)) = chars.next() else {
                    break;
                };
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '\\' | '"' | '\'' => e,
                    other => {
                        return Err(Error::at(
                            src,
                            start + 1 + esc_off - 1,
                            ErrorKind::BadEscape(other),
                        ));
                    }
                });
            }
            c => out.push(c),
        }
    }
    Err(Error::at(src, start, ErrorKind::UnterminatedString))
}

/// A `/regex/` at `start`: the pattern (`\/` unescaped) and its length in bytes.
fn regex(src: &str, start: usize) -> Result<(String, usize), Error> {
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '/' => return Ok((out, off + 2)),
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, e)) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(Error::at(src, start, ErrorKind::UnterminatedRegex))
}
