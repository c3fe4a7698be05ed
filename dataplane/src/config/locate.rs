//! Finds where a key path (`services.object_stores[1].id`) sits in YAML text.
//!
//! serde_yaml reports positions for errors it raises itself; checks made after
//! deserialization (duplicate ids, keys that don't fit a store type, …) use this
//! to point at the same line and column. It runs only when reporting an error.

use yaml_rust2::parser::{Event, Parser};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug)]
enum Node {
    Scalar(String, Pos),
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Pos),
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Node::Scalar(_, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }
}

/// Which end of a `key: value` pair a position points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// Where the last key is written (for keys that are wrong or out of place).
    Key,
    /// Where its value starts (for values that are wrong).
    Value,
}

/// Position of the node at `path`. Falls back to the deepest prefix found, then 1:1.
pub(crate) fn locate(text: &str, path: &[Segment<'_>], target: Target) -> Pos {
    let start = Pos { line: 1, col: 1 };
    let Some(root) = parse_tree(text) else {
        return start;
    };
    let mut node = &root;
    let mut found = root.pos();
    for seg in path {
        match (seg, node) {
            (Segment::Key(k), Node::Map(entries, _)) => {
                let Some((key, value)) = entries
                    .iter()
                    .find(|(key, _)| matches!(key, Node::Scalar(s, _) if s == k))
                else {
                    return found;
                };
                found = match target {
                    Target::Key => key.pos(),
                    Target::Value => value.pos(),
                };
                node = value;
            }
            (Segment::Index(i), Node::Seq(items, _)) => {
                let Some(item) = items.get(*i) else {
                    return found;
                };
                found = item.pos();
                node = item;
            }
            _ => return found,
        }
    }
    found
}

fn parse_tree(text: &str) -> Option<Node> {
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, mark) = parser.next_token().ok()?;
        match event {
            Event::StreamEnd => return None,
            Event::StreamStart | Event::DocumentStart => continue,
            _ => return build(&mut parser, event, pos(mark)),
        }
    }
}

fn pos(mark: yaml_rust2::scanner::Marker) -> Pos {
    // yaml-rust2 counts lines from 1 and columns from 0.
    Pos {
        line: mark.line(),
        col: mark.col() + 1,
    }
}

fn build(parser: &mut Parser<std::str::Chars<'_>>, event: Event, at: Pos) -> Option<Node> {
    match event {
        Event::Scalar(s, ..) => Some(Node::Scalar(s, at)),
        Event::Alias(_) => Some(Node::Scalar(String::new(), at)),
        Event::SequenceStart(..) => {
            let mut items = Vec::new();
            loop {
                let (ev, mark) = parser.next_token().ok()?;
                if ev == Event::SequenceEnd {
                    return Some(Node::Seq(items, at));
                }
                items.push(build(parser, ev, pos(mark))?);
            }
        }
        Event::MappingStart(..) => {
            let mut entries = Vec::new();
            loop {
                let (ev, mark) = parser.next_token().ok()?;
                if ev == Event::MappingEnd {
                    return Some(Node::Map(entries, at));
                }
                let key = build(parser, ev, pos(mark))?;
                let (ev, mark) = parser.next_token().ok()?;
                let value = build(parser, ev, pos(mark))?;
                entries.push((key, value));
            }
        }
        _ => None,
    }
}
