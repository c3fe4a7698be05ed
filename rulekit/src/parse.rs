//! Expression parser: tokens to a compiled tree, fields resolved, macros inlined.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::lex::{CmpOp, Tok, tokens};

/// Resolves field names at compile time.
pub trait Schema {
    /// The field `name` names (`http.res.status`, `http.req.headers.x-api-key`),
    /// or `None` if there is no such field.
    fn resolve(&self, name: &str) -> Option<FieldRef>;
}

/// A resolved field: the schema's id and an argument (a header name, for
/// fields with a variable last part).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    /// The schema's number for the field.
    pub id: u16,
    /// The variable part, if any (lowercase header name); empty otherwise.
    pub arg: Box<str>,
}

/// A rule expression that could not be compiled: where (1-based column, in
/// characters, of the expression) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {col}: {kind}")]
pub struct Error {
    /// 1-based column in the expression, counted in characters.
    pub col: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl Error {
    /// An error at byte offset `at` of `src`.
    pub(crate) fn at(src: &str, at: usize, kind: ErrorKind) -> Self {
        let at = at.min(src.len());
        let col = src.get(..at).map_or(at, |prefix| prefix.chars().count()) + 1;
        Error { col, kind }
    }
}

/// What is wrong with an expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A character that starts no token.
    #[error("unexpected character `{0}`")]
    UnexpectedChar(char),
    /// A word that is neither a name, a number nor an address.
    #[error("`{0}` is not a field, number or address")]
    BadWord(String),
    /// A string without its closing quote.
    #[error("string is not closed")]
    UnterminatedString,
    /// An unknown escape in a string.
    #[error("unknown escape `\\{0}` in string")]
    BadEscape(char),
    /// A regex without its closing slash.
    #[error("regex is not closed with `/`")]
    UnterminatedRegex,
    /// A regex that does not compile.
    #[error("invalid regex: {0}")]
    BadRegex(String),
    /// A CIDR whose address or prefix length is wrong.
    #[error("`{0}` is not a CIDR")]
    BadCidr(String),
    /// Something else was expected here.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What would fit.
        expected: &'static str,
        /// What is there.
        found: String,
    },
    /// A field the schema does not know.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// A call of something that is neither a function nor a macro.
    #[error(
        "unknown function or macro `{0}` (functions: `starts_with`, `ends_with`, `in_zone`, `zone`)"
    )]
    UnknownFunction(String),
    /// A call with the wrong arguments.
    #[error("`{name}` takes {expected}")]
    Arguments {
        /// The function.
        name: String,
        /// What it takes.
        expected: &'static str,
    },
    /// A macro defined twice.
    #[error("macro `{0}` is already defined")]
    DuplicateMacro(String),
    /// A macro named like a function.
    #[error("macro `{0}` has the name of a function")]
    MacroNamedLikeFunction(String),
}

/// Named expressions (`rulekit.macros`), used as `name()`.
#[derive(Debug, Clone, Default)]
pub struct Macros {
    defined: HashMap<String, Arc<Expr>>,
}

impl Macros {
    /// Defines macro `name` as `source` (which may use macros defined before).
    pub fn define(&mut self, name: &str, source: &str, schema: &dyn Schema) -> Result<(), Error> {
        if FUNCTIONS.contains(&name) {
            return Err(Error {
                col: 1,
                kind: ErrorKind::MacroNamedLikeFunction(name.to_owned()),
            });
        }
        if self.defined.contains_key(name) {
            return Err(Error {
                col: 1,
                kind: ErrorKind::DuplicateMacro(name.to_owned()),
            });
        }
        let expr = Parser::new(source, schema, self)?.whole()?;
        self.defined.insert(name.to_owned(), Arc::new(expr));
        Ok(())
    }

    /// Whether `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.defined.contains_key(name)
    }
}

const FUNCTIONS: &[&str] = &["starts_with", "ends_with", "in_zone", "zone"];

/// A compiled expression.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) expr: Expr,
}

/// The compiled tree.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Operand, CmpOp, Operand),
    Contains(Operand, Operand),
    InList(Operand, Vec<Lit>),
    InCidr(Operand, IpAddr, u8),
    Matches(Operand, regex::Regex),
    StartsWith(Operand, Operand),
    EndsWith(Operand, Operand),
    InZone(Operand, Operand),
    Truthy(Operand),
    /// A macro's body, shared by every rule that uses it.
    Macro(Arc<Expr>),
}

/// A value in an expression.
#[derive(Debug, Clone)]
pub(crate) enum Operand {
    Field(FieldRef),
    Lit(Lit),
    /// `zone(x)`: the last two labels of a domain.
    Zone(Box<Operand>),
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Box<str>),
    Ip(IpAddr),
}

pub(crate) fn compile(source: &str, schema: &dyn Schema, macros: &Macros) -> Result<Rule, Error> {
    let expr = Parser::new(source, schema, macros)?.whole()?;
    Ok(Rule { expr })
}

/// Deepest nesting of parentheses, `not` and calls; bounds the recursion of
/// both parsing and evaluation.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    schema: &'a dyn Schema,
    macros: &'a Macros,
}

/// What a term parsed to: a value, or (a call of a boolean function or
/// macro) a condition.
enum Term {
    Value(Operand),
    Cond(Expr),
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, schema: &'a dyn Schema, macros: &'a Macros) -> Result<Self, Error> {
        Ok(Parser {
            src,
            toks: tokens(src)?,
            pos: 0,
            depth: 0,
            schema,
            macros,
        })
    }

    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }

    fn offset(&self) -> usize {
        self.toks[self.pos].1
    }

    fn bump(&mut self) -> (Tok, usize) {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn error(&self, at: usize, kind: ErrorKind) -> Error {
        Error::at(self.src, at, kind)
    }

    fn expected(&self, expected: &'static str) -> Error {
        self.error(
            self.offset(),
            ErrorKind::Expected {
                expected,
                found: self.peek().describe(),
            },
        )
    }

    fn whole(mut self) -> Result<Expr, Error> {
        let expr = self.or()?;
        if *self.peek() != Tok::End {
            return Err(self.expected("`and`, `or` or the end of the expression"));
        }
        Ok(expr)
    }

    fn deeper(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.expected("less nesting (at most 64 levels)"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, Error> {
        let mut left = self.and()?;
        while *self.peek() == Tok::Or {
            self.bump();
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, Error> {
        let mut left = self.unary()?;
        while *self.peek() == Tok::And {
            self.bump();
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        match self.peek() {
            Tok::Not => {
                self.bump();
                self.deeper()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Tok::Open => {
                self.bump();
                self.deeper()?;
                let inner = self.or()?;
                self.depth -= 1;
                if *self.peek() != Tok::Close {
                    return Err(self.expected("`)`"));
                }
                self.bump();
                Ok(inner)
            }
            _ => self.predicate(),
        }
    }

    fn predicate(&mut self) -> Result<Expr, Error> {
        let left = match self.term()? {
            Term::Cond(expr) => return Ok(expr),
            Term::Value(v) => v,
        };
        let (op, _) = match self.peek() {
            Tok::Cmp(_) | Tok::Contains | Tok::In | Tok::Matches => self.bump(),
            _ => return Ok(Expr::Truthy(left)),
        };
        Ok(match op {
            Tok::Cmp(op) => Expr::Cmp(left, op, self.value()?),
            Tok::Contains => Expr::Contains(left, self.value()?),
            Tok::In => match self.peek().clone() {
                Tok::OpenList => {
                    self.bump();
                    Expr::InList(left, self.list()?)
                }
                Tok::Cidr(ip, len) => {
                    self.bump();
                    Expr::InCidr(left, ip, len)
                }
                _ => return Err(self.expected("a list `[..]` or a CIDR after `in`")),
            },
            _ => match self.peek().clone() {
                Tok::Regex(pattern) => {
                    let at = self.offset();
                    self.bump();
                    match regex::Regex::new(&pattern) {
                        Ok(re) => Expr::Matches(left, re),
                        Err(e) => return Err(self.error(at, ErrorKind::BadRegex(short(&e)))),
                    }
                }
                _ => return Err(self.expected("a `/regex/` after `matches`")),
            },
        })
    }

    fn list(&mut self) -> Result<Vec<Lit>, Error> {
        let mut items = Vec::new();
        loop {
            if *self.peek() == Tok::CloseList {
                self.bump();
                return Ok(items);
            }
            match literal(self.peek().clone()) {
                Some(lit) => items.push(lit),
                None => return Err(self.expected("a literal or `]` in the list")),
            }
            self.bump();
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::CloseList => {}
                _ => return Err(self.expected("`,` or `]`")),
            }
        }
    }

    /// A term that must be a value (the right side of an operator, an argument).
    fn value(&mut self) -> Result<Operand, Error> {
        let at = self.offset();
        match self.term()? {
            Term::Value(v) => Ok(v),
            Term::Cond(_) => Err(self.error(
                at,
                ErrorKind::Expected {
                    expected: "a value",
                    found: "a condition".to_owned(),
                },
            )),
        }
    }

    fn term(&mut self) -> Result<Term, Error> {
        let at = self.offset();
        let tok = self.peek().clone();
        if let Tok::Ident(name) = &tok {
            self.bump();
            if *self.peek() == Tok::Open {
                return self.call(name, at);
            }
            return match self.schema.resolve(name) {
                Some(field) => Ok(Term::Value(Operand::Field(field))),
                None => Err(self.error(at, ErrorKind::UnknownField(name.clone()))),
            };
        }
        match literal(tok) {
            Some(lit) => {
                self.bump();
                Ok(Term::Value(Operand::Lit(lit)))
            }
            None => Err(self.expected("a field, a value or `(`")),
        }
    }

    fn call(&mut self, name: &str, at: usize) -> Result<Term, Error> {
        self.bump(); // `(`
        self.deeper()?;
        let mut args = Vec::new();
        if *self.peek() != Tok::Close {
            loop {
                args.push(self.value()?);
                match self.peek() {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::Close => break,
                    _ => return Err(self.expected("`,` or `)`")),
                }
            }
        }
        self.bump(); // `)`
        self.depth -= 1;
        let arity = |n: usize, expected: &'static str| {
            if args.len() == n {
                Ok(())
            } else {
                Err(self.error(
                    at,
                    ErrorKind::Arguments {
                        name: name.to_owned(),
                        expected,
                    },
                ))
            }
        };
        let two = |args: &mut Vec<Operand>| {
            let b = args.pop().expect("two arguments");
            let a = args.pop().expect("two arguments");
            (a, b)
        };
        Ok(match name {
            "starts_with" | "ends_with" | "in_zone" => {
                arity(2, "two arguments")?;
                let (a, b) = two(&mut args);
                Term::Cond(match name {
                    "starts_with" => Expr::StartsWith(a, b),
                    "ends_with" => Expr::EndsWith(a, b),
                    _ => Expr::InZone(a, b),
                })
            }
            "zone" => {
                arity(1, "one argument")?;
                Term::Value(Operand::Zone(Box::new(args.remove(0))))
            }
            _ => match self.macros.defined.get(name) {
                Some(body) => {
                    arity(0, "no arguments (it is a macro)")?;
                    Term::Cond(Expr::Macro(Arc::clone(body)))
                }
                None => {
                    return Err(self.error(at, ErrorKind::UnknownFunction(name.to_owned())));
                }
            },
        })
    }
}

fn literal(tok: Tok) -> Option<Lit> {
    Some(match tok {
        Tok::Bool(b) => Lit::Bool(b),
        Tok::Int(n) => Lit::Int(n),
        Tok::Float(n) => Lit::Float(n),
        Tok::Str(s) => Lit::Str(s.into()),
        Tok::Ip(ip) => Lit::Ip(ip),
        _ => return None,
    })
}

/// The regex crate's message without its multi-line excerpt.
fn short(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map_or(text.clone(), |l| l.trim_start_matches("error: ").to_owned())
}
