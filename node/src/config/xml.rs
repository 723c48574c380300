//! Stage 1: the text becomes a small tree of elements and attributes, each
//! with its byte offset, so that every later error can name file:line:column.
//!
//! quick-xml's event reader is walked by hand (serde would lose the
//! positions). Only elements with attributes are accepted: text, CDATA,
//! entity references, processing instructions and DOCTYPE are refused.

use std::path::{Path, PathBuf};

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::ConfigError;

/// An attribute as written: its name, unescaped value and byte offset.
pub(super) struct Attr {
    pub name: String,
    pub value: String,
    pub at: usize,
}

/// An element: its name, byte offset, attributes and child elements.
pub(super) struct Elem {
    pub name: String,
    pub at: usize,
    pub attrs: Vec<Attr>,
    pub children: Vec<Elem>,
}

impl Elem {
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// How the element is named in messages: `<servers>`, `<server number="2">`.
    pub fn describe(&self) -> String {
        match (self.name.as_str(), self.attr("number")) {
            ("server", Some(n)) => format!("<server number=\"{}\">", n.value),
            _ => format!("<{}>", self.name),
        }
    }
}

/// How `<server number="N">` is named in messages.
pub(super) fn server_desc(number: u64) -> String {
    format!("<server number=\"{number}\">")
}

/// The text being read, and where it came from.
pub(super) struct Ctx<'a> {
    pub file: &'a str,
    pub text: &'a str,
    /// Directory relative file paths are resolved against; None: the
    /// current directory.
    pub base_dir: Option<&'a Path>,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, at: usize) -> (usize, usize) {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Byte offset of `part` within the text (it must borrow from it).
    fn offset_of(&self, part: &[u8], fallback: usize) -> usize {
        let base = self.text.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        if p >= base && p <= base + self.text.len() {
            p - base
        } else {
            fallback
        }
    }

    fn syntax(&self, at: usize, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(at);
        ConfigError::Syntax { file: self.file.to_string(), line, column, message: message.into() }
    }

    /// `path` as given in the file, resolved against [`Ctx::base_dir`].
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match self.base_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    pub fn invalid(
        &self,
        at: usize,
        element: String,
        field: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(at);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            element,
            field,
            message: message.into(),
        }
    }

    pub fn tree(&self) -> Result<Elem, ConfigError> {
        let mut reader = Reader::from_str(self.text);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Elem> = Vec::new();
        let mut root: Option<Elem> = None;
        loop {
            let start = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(e) => e,
                Err(e) => return Err(self.syntax(reader.error_position() as usize, e.to_string())),
            };
            let (opened, empty) = match &event {
                Event::Start(e) => (Some(e), false),
                Event::Empty(e) => (Some(e), true),
                _ => (None, false),
            };
            if let Some(e) = opened {
                let elem = self.element(e, start)?;
                if stack.is_empty() && root.is_some() {
                    return Err(self.syntax(
                        start,
                        format!("second root element <{}>; the document must have exactly one root <herald>", elem.name),
                    ));
                }
                if empty {
                    attach(&mut stack, &mut root, elem);
                } else {
                    stack.push(elem);
                }
                continue;
            }
            match event {
                Event::End(_) => match stack.pop() {
                    Some(done) => attach(&mut stack, &mut root, done),
                    None => return Err(self.syntax(start, "end tag without a start tag")),
                },
                Event::Text(t) => {
                    let raw: &[u8] = &t;
                    if let Some(skip) = raw.iter().position(|b| !b.is_ascii_whitespace()) {
                        return Err(self.text_error(&stack, start + skip, raw));
                    }
                }
                Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(self.text_error(&stack, start, b""));
                }
                Event::Comment(_) | Event::Decl(_) => {}
                Event::PI(_) => {
                    return Err(self.syntax(start, "processing instructions are not allowed"))
                }
                Event::DocType(_) => {
                    return Err(self.syntax(start, "a DOCTYPE declaration is not allowed"))
                }
                Event::Eof => {
                    if let Some(open) = stack.last() {
                        let (line, _) = self.line_col(open.at);
                        return Err(self.syntax(
                            start,
                            format!(
                                "unexpected end of file: <{}> opened at line {line} is not closed",
                                open.name
                            ),
                        ));
                    }
                    return root
                        .ok_or_else(|| self.syntax(start, "no root element; expected <herald>"));
                }
                Event::Start(_) | Event::Empty(_) => unreachable!("handled above"),
            }
        }
    }

    fn text_error(&self, stack: &[Elem], at: usize, raw: &[u8]) -> ConfigError {
        let shown: String = String::from_utf8_lossy(raw).trim().chars().take(30).collect();
        let what = if shown.is_empty() {
            "unexpected text content".to_string()
        } else {
            format!("unexpected text {shown:?}")
        };
        match stack.last() {
            Some(parent) => self.invalid(
                at,
                parent.describe(),
                None,
                format!("{what}; this element takes attributes only"),
            ),
            None => self.syntax(at, format!("{what} outside the root element")),
        }
    }

    /// A start tag -> element with its attributes (duplicates refused here).
    fn element(&self, e: &BytesStart<'_>, start: usize) -> Result<Elem, ConfigError> {
        let buf_at = self.offset_of(e, start + 1);
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut elem = Elem { name, at: start, attrs: Vec::new(), children: Vec::new() };
        let mut attrs = e.attributes();
        attrs.with_checks(false);
        for a in attrs {
            let a = a.map_err(|err| {
                let (rel, message) = match err {
                    AttrError::ExpectedEq(p) => {
                        (p, "attribute name must be followed by `=`".into())
                    }
                    AttrError::ExpectedValue(p) => {
                        (p, "`=` must be followed by a quoted value".into())
                    }
                    AttrError::UnquotedValue(p) => (p, "attribute value must be quoted".into()),
                    AttrError::ExpectedQuote(p, q) => {
                        (p, format!("attribute value is missing its closing {}", q as char))
                    }
                    AttrError::Duplicated(p, _) => (p, "duplicate attribute".into()),
                };
                self.syntax(buf_at + rel, format!("in <{}>: {message}", elem.name))
            })?;
            let at = self.offset_of(a.key.as_ref(), start);
            let attr_name = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = a
                .unescape_value()
                .map_err(|err| {
                    self.invalid(
                        at,
                        elem.describe(),
                        Some(attr_name.clone()),
                        format!("bad value: {err}"),
                    )
                })?
                .into_owned();
            if let Some(first) = elem.attr(&attr_name) {
                let (line, _) = self.line_col(first.at);
                return Err(self.invalid(
                    at,
                    elem.describe(),
                    Some(attr_name),
                    format!("duplicate attribute (first given at line {line})"),
                ));
            }
            elem.attrs.push(Attr { name: attr_name, value, at });
        }
        Ok(elem)
    }
}

fn attach(stack: &mut [Elem], root: &mut Option<Elem>, elem: Elem) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(elem),
        None => *root = Some(elem),
    }
}
