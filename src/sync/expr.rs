//! The expression language of attribute mappings, in Entra's syntax: parsing (with every check an
//! administrator's typo or a hostile input needs) and evaluation against one object's attributes.
//!
//! An expression is one value: an attribute reference `[displayName]`, a text `"corp"` (with `\"`
//! and `\\` escapes), a whole number `42`, or a call `Join("@", [uid], "corp.example.test")` whose
//! arguments are expressions. Function names are case-insensitive, whitespace may appear anywhere
//! between tokens. Every error is an [`ExprError`] whose message starts with the 1-based character
//! position it is about, because administrators read it in the "Test expression" box and in 422s.
//!
//! Null (a missing attribute, `""`, an empty result) propagates the way Entra's does: functions
//! of a null source are null, `Join` and `Coalesce` skip nulls, `IsPresent` and `IsNullOrEmpty`
//! test for it.

use std::collections::BTreeMap;
use std::fmt;

/// One object's attributes: lowercase attribute name → its values, as text.
pub type Attributes = BTreeMap<String, Vec<String>>;

/// Expressions longer than this (in characters) are refused: a mapping is a one-liner, and the
/// limit bounds parse and evaluation time for whatever is sent to the API.
const MAX_LENGTH: usize = 4096;
/// Function calls nested deeper than this are refused, which bounds the parser's and the
/// evaluator's recursion so no input can overflow the stack.
const MAX_DEPTH: usize = 32;
/// How much of an offending value an error message quotes: attribute values can be long.
const MAX_QUOTED: usize = 64;

/// A parsed, validated expression, ready to evaluate against any object's attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: Node,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Lowercase, as attribute names are case-insensitive and [`Attributes`] keys are lowercase.
    Attribute(String),
    Text(String),
    Number(i64),
    Call {
        function: Function,
        args: Vec<Node>,
        /// Where the function name starts, for evaluation errors.
        position: usize,
    },
}

/// What went wrong with an expression; `Display` is the full message shown to administrators.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    #[error(
        "the expression is empty; enter a function call such as Join(\" \", [givenName], [sn]), \
         an attribute such as [displayName], or a text in quotes"
    )]
    Empty,
    #[error("the expression is {length} characters long, over the limit of {limit}; shorten it")]
    TooLong { length: usize, limit: usize },
    #[error(
        "position {position}: functions are nested more than {limit} levels deep; simplify the \
         expression"
    )]
    TooDeep { position: usize, limit: usize },
    #[error(
        "position {position}: unknown function {name}; the known functions are {}",
        known_function_names()
    )]
    UnknownFunction { position: usize, name: String },
    #[error("position {position}: {function} needs {expected}, but was given {given}")]
    Arity {
        position: usize,
        function: &'static str,
        expected: &'static str,
        given: usize,
    },
    /// The text does not follow the expression syntax.
    #[error("position {position}: {message}")]
    Syntax { position: usize, message: String },
    /// The expression is well-formed but cannot be computed for these attribute values.
    #[error("position {position}: {message}")]
    Evaluation { position: usize, message: String },
}

/// The result of an expression. Entra's expressions are loosely typed: every value can be used as
/// text (see the `Display` impl), and numbers and booleans come from `BitAnd`, `Not`, `IsPresent`…
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Bool(bool),
    Number(i64),
}

impl fmt::Display for Value {
    /// Booleans print as `True`/`False`, as Entra's do, so mapped values look the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Number(number) => write!(f, "{number}"),
        }
    }
}

/// The functions an expression may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Append,
    BitAnd,
    CBool,
    Coalesce,
    Iif,
    IsNullOrEmpty,
    IsPresent,
    Join,
    Left,
    Mid,
    Not,
    Replace,
    ToLower,
    ToUpper,
    Trim,
}

/// Every function, in the alphabetical order the "unknown function" message lists them.
const FUNCTIONS: [Function; 15] = [
    Function::Append,
    Function::BitAnd,
    Function::CBool,
    Function::Coalesce,
    Function::Iif,
    Function::IsNullOrEmpty,
    Function::IsPresent,
    Function::Join,
    Function::Left,
    Function::Mid,
    Function::Not,
    Function::Replace,
    Function::ToLower,
    Function::ToUpper,
    Function::Trim,
];

/// How many arguments a function takes: at least `min`, at most `max` (`None` = any number more),
/// and how the "wrong number of arguments" message describes them.
struct Arity {
    min: usize,
    max: Option<usize>,
    expected: &'static str,
}

impl Function {
    /// The canonical spelling, as Entra's reference writes it.
    fn name(self) -> &'static str {
        match self {
            Function::Append => "Append",
            Function::BitAnd => "BitAnd",
            Function::CBool => "CBool",
            Function::Coalesce => "Coalesce",
            Function::Iif => "IIF",
            Function::IsNullOrEmpty => "IsNullOrEmpty",
            Function::IsPresent => "IsPresent",
            Function::Join => "Join",
            Function::Left => "Left",
            Function::Mid => "Mid",
            Function::Not => "Not",
            Function::Replace => "Replace",
            Function::ToLower => "ToLower",
            Function::ToUpper => "ToUpper",
            Function::Trim => "Trim",
        }
    }

    fn by_name(name: &str) -> Option<Function> {
        FUNCTIONS
            .into_iter()
            .find(|function| function.name().eq_ignore_ascii_case(name))
    }

    fn arity(self) -> Arity {
        let exactly = |count, expected| Arity {
            min: count,
            max: Some(count),
            expected,
        };
        match self {
            Function::Append => exactly(2, "exactly 2 arguments (source, suffix)"),
            Function::BitAnd => exactly(2, "exactly 2 arguments (two whole numbers)"),
            Function::CBool => exactly(1, "exactly 1 argument (the value to convert)"),
            Function::Coalesce => Arity {
                min: 1,
                max: None,
                expected: "at least 1 argument (the values to choose from)",
            },
            Function::Iif => exactly(
                3,
                "exactly 3 arguments (condition, value if true, value if false)",
            ),
            Function::IsNullOrEmpty | Function::IsPresent => {
                exactly(1, "exactly 1 argument (the value to test)")
            }
            Function::Join => Arity {
                min: 2,
                max: None,
                expected: "at least 2 arguments (a separator and one value)",
            },
            Function::Left => exactly(2, "exactly 2 arguments (source, number of characters)"),
            Function::Mid => exactly(3, "exactly 3 arguments (source, start, length)"),
            Function::Not => exactly(1, "exactly 1 argument (a true/false value)"),
            Function::Replace => exactly(3, "exactly 3 arguments (source, find, replacement)"),
            Function::ToLower | Function::ToUpper | Function::Trim => {
                exactly(1, "exactly 1 argument (source)")
            }
        }
    }
}

fn known_function_names() -> String {
    FUNCTIONS.map(Function::name).join(", ")
}

/// Parses and validates an expression: syntax, function names, argument counts and the limits.
pub fn parse(source: &str) -> Result<Expr, ExprError> {
    // Count without collecting first, so a megabyte of input costs no allocation.
    let length = source.chars().count();
    if length > MAX_LENGTH {
        return Err(ExprError::TooLong {
            length,
            limit: MAX_LENGTH,
        });
    }
    if source.trim().is_empty() {
        return Err(ExprError::Empty);
    }
    let mut parser = Parser {
        chars: source.chars().collect(),
        index: 0,
    };
    let root = parser.value(0)?;
    parser.skip_whitespace();
    if let Some(&unexpected) = parser.chars.get(parser.index) {
        let message = match unexpected {
            ')' => "unbalanced parentheses: this ')' has no matching '('".to_string(),
            ']' => "unbalanced brackets: this ']' has no matching '['".to_string(),
            ',' => "a ',' outside a function call; arguments are separated by ',' only \
                    inside Name(…)"
                .to_string(),
            other => format!(
                "unexpected {other:?} after the end of the expression; to combine values, use a \
                 function such as Join or Append"
            ),
        };
        return Err(parser.syntax_error(parser.index, message));
    }
    Ok(Expr { root })
}

/// A recursive-descent parser over characters, so positions count characters, not bytes.
struct Parser {
    chars: Vec<char>,
    index: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.index).copied()
    }

    fn skip_whitespace(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.index += 1;
        }
    }

    /// `index` is 0-based; messages use 1-based positions like an editor's column.
    fn syntax_error(&self, index: usize, message: String) -> ExprError {
        ExprError::Syntax {
            position: index + 1,
            message,
        }
    }

    /// One value; `depth` is how many calls enclose it.
    fn value(&mut self, depth: usize) -> Result<Node, ExprError> {
        self.skip_whitespace();
        let start = self.index;
        match self.peek() {
            None => Err(self.syntax_error(
                start,
                "the expression ends where a value was expected (a function call, an \
                 [attribute], a \"text\" or a number)"
                    .to_string(),
            )),
            Some('[') => self.attribute(),
            Some('"') => self.text(),
            Some(c) if c.is_ascii_digit() || c == '-' => self.number(),
            Some(c) if c.is_ascii_alphabetic() => self.call(depth),
            Some(other) => Err(self.syntax_error(
                start,
                format!(
                    "expected a value (a function call, an [attribute], a \"text\" or a number) \
                     but found {other:?}"
                ),
            )),
        }
    }

    fn attribute(&mut self) -> Result<Node, ExprError> {
        let open = self.index;
        self.index += 1;
        self.skip_whitespace();
        let name_start = self.index;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            self.index += 1;
        }
        let name: String = self.chars[name_start..self.index].iter().collect();
        self.skip_whitespace();
        match self.peek() {
            Some(']') => self.index += 1,
            None => {
                return Err(self.syntax_error(
                    open,
                    "unbalanced brackets: this '[' is never closed; write attributes like \
                     [displayName]"
                        .to_string(),
                ))
            }
            Some(other) => {
                return Err(self.syntax_error(
                    self.index,
                    format!(
                        "unexpected {other:?} in an attribute name; attribute names contain only \
                         letters, digits and hyphens, and end with ']'"
                    ),
                ))
            }
        }
        if name.is_empty() {
            return Err(self.syntax_error(
                open,
                "empty attribute name []; put the attribute's name between the brackets, like \
                 [displayName]"
                    .to_string(),
            ));
        }
        if !is_attribute_name(&name) {
            return Err(self.syntax_error(
                name_start,
                format!(
                    "[{name}] is not a valid attribute name; attribute names start with a letter"
                ),
            ));
        }
        Ok(Node::Attribute(name.to_ascii_lowercase()))
    }

    fn text(&mut self) -> Result<Node, ExprError> {
        let open = self.index;
        self.index += 1;
        let mut text = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(self.syntax_error(
                        open,
                        "unterminated text: the '\"' that starts here is never closed; end the \
                         text with '\"' (write \\\" for a quotation mark inside it)"
                            .to_string(),
                    ))
                }
                Some('"') => {
                    self.index += 1;
                    return Ok(Node::Text(text));
                }
                Some('\\') => {
                    match self.chars.get(self.index + 1) {
                        Some(&escaped @ ('"' | '\\')) => text.push(escaped),
                        Some(other) => {
                            return Err(self.syntax_error(
                                self.index,
                                format!(
                                    "unknown escape \\{other} in a text; only \\\" (quotation \
                                     mark) and \\\\ (backslash) are escapes, so write a \
                                     backslash as \\\\"
                                ),
                            ))
                        }
                        None => {
                            return Err(self.syntax_error(
                                open,
                                "unterminated text: the '\"' that starts here is never closed"
                                    .to_string(),
                            ))
                        }
                    }
                    self.index += 2;
                }
                Some(c) => {
                    text.push(c);
                    self.index += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Node, ExprError> {
        let start = self.index;
        if self.peek() == Some('-') {
            self.index += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.index += 1;
        }
        let literal: String = self.chars[start..self.index].iter().collect();
        if literal == "-" {
            return Err(self.syntax_error(
                start,
                "a '-' must be followed by digits, like -1".to_string(),
            ));
        }
        if self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(self.syntax_error(
                self.index,
                format!(
                    "a number is directly followed by letters; numbers contain only digits, and \
                     text goes in quotes, like \"{literal}…\""
                ),
            ));
        }
        literal.parse().map(Node::Number).map_err(|_| {
            self.syntax_error(
                start,
                format!(
                    "the number {literal} is out of range; numbers must be between {} and {}",
                    i64::MIN,
                    i64::MAX
                ),
            )
        })
    }

    fn call(&mut self, depth: usize) -> Result<Node, ExprError> {
        let start = self.index;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric()) {
            self.index += 1;
        }
        let name: String = self.chars[start..self.index].iter().collect();
        self.skip_whitespace();
        if self.peek() != Some('(') {
            return Err(self.syntax_error(
                start,
                format!(
                    "{name} is neither a function call nor an attribute; write functions as \
                     {name}(…), attributes in brackets like [{name}], and text in quotes like \
                     \"{name}\""
                ),
            ));
        }
        let Some(function) = Function::by_name(&name) else {
            return Err(ExprError::UnknownFunction {
                position: start + 1,
                name,
            });
        };
        if depth + 1 > MAX_DEPTH {
            return Err(ExprError::TooDeep {
                position: start + 1,
                limit: MAX_DEPTH,
            });
        }
        let open = self.index;
        self.index += 1;
        let mut args = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(')') {
            self.index += 1;
        } else {
            loop {
                args.push(self.value(depth + 1)?);
                self.skip_whitespace();
                match self.peek() {
                    Some(',') => self.index += 1,
                    Some(')') => {
                        self.index += 1;
                        break;
                    }
                    None => {
                        return Err(self.syntax_error(
                            open,
                            format!(
                                "unbalanced parentheses: the '(' of {} is never closed; add a ')'",
                                function.name()
                            ),
                        ))
                    }
                    Some(other) => {
                        return Err(self.syntax_error(
                            self.index,
                            format!(
                                "expected ',' or ')' after an argument of {}, but found {other:?}",
                                function.name()
                            ),
                        ))
                    }
                }
            }
        }
        let arity = function.arity();
        if args.len() < arity.min || arity.max.is_some_and(|max| args.len() > max) {
            return Err(ExprError::Arity {
                position: start + 1,
                function: function.name(),
                expected: arity.expected,
                given: args.len(),
            });
        }
        Ok(Node::Call {
            function,
            args,
            position: start + 1,
        })
    }
}

/// An LDAP attribute name (RFC 4512 `keystring`): a letter, then letters, digits and hyphens.
pub(crate) fn is_attribute_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The values of an attribute, by name in any case. Keys are meant to be lowercase; the fallback
/// scan keeps a caller that forgot to lowercase from silently reading nothing.
pub(crate) fn lookup<'a>(attrs: &'a Attributes, name: &str) -> Option<&'a Vec<String>> {
    attrs.get(&name.to_ascii_lowercase()).or_else(|| {
        attrs
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, values)| values)
    })
}

impl Expr {
    /// Computes the expression for one object; `Ok(None)` is null (missing attribute, empty text).
    pub fn evaluate(&self, attrs: &Attributes) -> Result<Option<Value>, ExprError> {
        evaluate(&self.root, attrs)
    }

    /// The lowercase names of every attribute the expression reads, sorted and deduplicated: what
    /// the agent must import for this expression.
    pub fn attributes(&self) -> Vec<String> {
        fn collect<'a>(node: &'a Node, names: &mut Vec<&'a str>) {
            match node {
                Node::Attribute(name) => names.push(name),
                Node::Call { args, .. } => args.iter().for_each(|arg| collect(arg, names)),
                Node::Text(_) | Node::Number(_) => {}
            }
        }
        let mut names = Vec::new();
        collect(&self.root, &mut names);
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(str::to_string).collect()
    }
}

/// Empty text is null in Entra's expressions ("Set NULL with \"\"").
fn text_or_null(text: String) -> Option<Value> {
    (!text.is_empty()).then_some(Value::Text(text))
}

fn evaluate(node: &Node, attrs: &Attributes) -> Result<Option<Value>, ExprError> {
    match node {
        Node::Attribute(name) => Ok(lookup(attrs, name)
            .and_then(|values| values.first())
            .and_then(|first| text_or_null(first.clone()))),
        Node::Text(text) => Ok(text_or_null(text.clone())),
        Node::Number(number) => Ok(Some(Value::Number(*number))),
        Node::Call {
            function,
            args,
            position,
        } => Call {
            function: *function,
            args,
            position: *position,
            attrs,
        }
        .evaluate(),
    }
}

/// One function call being evaluated: arguments are evaluated on demand, so `IIF` and `Coalesce`
/// only compute (and only fail on) the branches they use.
struct Call<'a> {
    function: Function,
    args: &'a [Node],
    position: usize,
    attrs: &'a Attributes,
}

impl Call<'_> {
    fn arg(&self, index: usize) -> Result<Option<Value>, ExprError> {
        evaluate(&self.args[index], self.attrs)
    }

    fn text(&self, index: usize) -> Result<Option<String>, ExprError> {
        Ok(self.arg(index)?.map(|value| value.to_string()))
    }

    fn number(&self, index: usize, what: &str) -> Result<Option<i64>, ExprError> {
        let Some(value) = self.arg(index)? else {
            return Ok(None);
        };
        let number = match &value {
            Value::Number(number) => Some(*number),
            Value::Text(text) => text.trim().parse().ok(),
            Value::Bool(_) => None,
        };
        number.map(Some).ok_or_else(|| {
            self.error(format!(
                "{} needs a whole number as its {} argument ({what}), but got {}",
                self.function.name(),
                ordinal(index),
                quote_for_message(&value)
            ))
        })
    }

    fn boolean(&self, index: usize) -> Result<Option<bool>, ExprError> {
        let Some(value) = self.arg(index)? else {
            return Ok(None);
        };
        let boolean = match &value {
            Value::Bool(boolean) => Some(*boolean),
            // Entra's CBool: any non-zero number is true, which is what makes
            // Not(BitAnd([userAccountControl], 2)) work.
            Value::Number(number) => Some(*number != 0),
            Value::Text(text) => {
                let text = text.trim();
                if text.eq_ignore_ascii_case("true") {
                    Some(true)
                } else if text.eq_ignore_ascii_case("false") {
                    Some(false)
                } else {
                    text.parse::<i64>().ok().map(|number| number != 0)
                }
            }
        };
        boolean.map(Some).ok_or_else(|| {
            self.error(format!(
                "{} needs a true/false value as its {} argument, but got {}; use True, False or \
                 a number (0 is false)",
                self.function.name(),
                ordinal(index),
                quote_for_message(&value)
            ))
        })
    }

    fn error(&self, message: String) -> ExprError {
        ExprError::Evaluation {
            position: self.position,
            message,
        }
    }

    fn evaluate(&self) -> Result<Option<Value>, ExprError> {
        match self.function {
            Function::Append => {
                // Nothing to append to: a suffix alone ("@corp" without a name) is never useful.
                let Some(source) = self.text(0)? else {
                    return Ok(None);
                };
                let suffix = self.text(1)?.unwrap_or_default();
                Ok(text_or_null(source + &suffix))
            }
            Function::BitAnd => {
                let left = self.number(0, "the value")?;
                let right = self.number(1, "the mask")?;
                Ok(left
                    .zip(right)
                    .map(|(left, right)| Value::Number(left & right)))
            }
            Function::CBool => Ok(self.boolean(0)?.map(Value::Bool)),
            Function::Coalesce => {
                for index in 0..self.args.len() {
                    if let Some(value) = self.arg(index)? {
                        return Ok(Some(value));
                    }
                }
                Ok(None)
            }
            Function::Iif => {
                // A null condition (say, a missing attribute) is not true.
                let branch = if self.boolean(0)?.unwrap_or(false) {
                    1
                } else {
                    2
                };
                self.arg(branch)
            }
            Function::IsNullOrEmpty => Ok(Some(Value::Bool(self.arg(0)?.is_none()))),
            Function::IsPresent => Ok(Some(Value::Bool(self.arg(0)?.is_some()))),
            Function::Join => {
                let separator = self.text(0)?.unwrap_or_default();
                let mut parts = Vec::new();
                for index in 1..self.args.len() {
                    if let Some(part) = self.text(index)? {
                        parts.push(part);
                    }
                }
                Ok(text_or_null(parts.join(&separator)))
            }
            Function::Left => {
                let Some(source) = self.text(0)? else {
                    return Ok(None);
                };
                let Some(count) = self.number(1, "the number of characters")? else {
                    return Ok(None);
                };
                // Entra: a negative count returns the whole string.
                if count < 0 {
                    return Ok(text_or_null(source));
                }
                let count = usize::try_from(count).unwrap_or(usize::MAX);
                Ok(text_or_null(source.chars().take(count).collect()))
            }
            Function::Mid => {
                let Some(source) = self.text(0)? else {
                    return Ok(None);
                };
                let start = self.number(1, "the start position, counting from 1")?;
                let length = self.number(2, "the number of characters")?;
                let (Some(start), Some(length)) = (start, length) else {
                    return Ok(None);
                };
                if start < 1 {
                    return Err(self.error(format!(
                        "Mid's start position counts from 1 (the first character), but got \
                         {start}"
                    )));
                }
                if length < 0 {
                    return Err(self.error(format!(
                        "Mid's length must be 0 or more characters, but got {length}"
                    )));
                }
                let skip = usize::try_from(start - 1).unwrap_or(usize::MAX);
                let take = usize::try_from(length).unwrap_or(usize::MAX);
                Ok(text_or_null(source.chars().skip(skip).take(take).collect()))
            }
            Function::Not => Ok(self.boolean(0)?.map(|boolean| Value::Bool(!boolean))),
            Function::Replace => {
                let Some(source) = self.text(0)? else {
                    return Ok(None);
                };
                // Nothing to find leaves the source as is (an empty pattern would match between
                // every character); a null replacement deletes what is found.
                let Some(find) = self.text(1)? else {
                    return Ok(text_or_null(source));
                };
                let replacement = self.text(2)?.unwrap_or_default();
                Ok(text_or_null(source.replace(&find, &replacement)))
            }
            Function::ToLower => Ok(self.text(0)?.and_then(|s| text_or_null(s.to_lowercase()))),
            Function::ToUpper => Ok(self.text(0)?.and_then(|s| text_or_null(s.to_uppercase()))),
            Function::Trim => Ok(self
                .text(0)?
                .and_then(|s| text_or_null(s.trim().to_string()))),
        }
    }
}

fn ordinal(index: usize) -> &'static str {
    match index {
        0 => "first",
        1 => "second",
        2 => "third",
        _ => "next",
    }
}

/// A value as an error message shows it: text in quotes, cut short when long.
fn quote_for_message(value: &Value) -> String {
    match value {
        Value::Text(text) if text.chars().count() > MAX_QUOTED => {
            let start: String = text.chars().take(MAX_QUOTED).collect();
            format!("{start:?}…")
        }
        Value::Text(text) => format!("{text:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attrs(pairs: &[(&str, &[&str])]) -> Attributes {
        pairs
            .iter()
            .map(|(name, values)| {
                (
                    name.to_string(),
                    values.iter().map(|value| value.to_string()).collect(),
                )
            })
            .collect()
    }

    fn person() -> Attributes {
        attrs(&[
            ("uid", &["jdoe"]),
            ("givenname", &["Zoë"]),
            ("sn", &["Doe"]),
            ("displayname", &["Doe, Zoë"]),
            ("l", &["Ærøskøbing"]),
            ("mail", &["a@x.test", "b@x.test"]),
            ("useraccountcontrol", &["514"]),
            ("empty", &[""]),
            ("novalues", &[]),
        ])
    }

    /// Evaluates against [`person`], panicking with the message on any error (tests only).
    fn eval(source: &str) -> Option<Value> {
        let expr = parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        expr.evaluate(&person())
            .unwrap_or_else(|e| panic!("{source}: {e}"))
    }

    fn text(source: &str) -> Option<String> {
        eval(source).map(|value| value.to_string())
    }

    fn parse_error(source: &str) -> String {
        parse(source).expect_err(source).to_string()
    }

    fn evaluation_error(source: &str) -> String {
        parse(source)
            .unwrap_or_else(|e| panic!("{source}: {e}"))
            .evaluate(&person())
            .expect_err(source)
            .to_string()
    }

    #[test]
    fn literals_and_attributes() {
        assert_eq!(text("\"plain\""), Some("plain".into()));
        assert_eq!(
            text(r#""say \"hi\" C:\\dir""#),
            Some(r#"say "hi" C:\dir"#.into())
        );
        assert_eq!(eval("42"), Some(Value::Number(42)));
        assert_eq!(eval("-7"), Some(Value::Number(-7)));
        assert_eq!(eval("\"\""), None, "\"\" sets null");
        assert_eq!(text("[uid]"), Some("jdoe".into()));
        assert_eq!(text("  [ UID ]  "), Some("jdoe".into()), "case-insensitive");
        assert_eq!(
            text("[mail]"),
            Some("a@x.test".into()),
            "first value of many"
        );
        assert_eq!(eval("[missing]"), None);
        assert_eq!(eval("[empty]"), None);
        assert_eq!(eval("[novalues]"), None);
        assert_eq!(text("[ms-DS-ConsistencyGuid]"), None, "hyphens are allowed");
    }

    #[test]
    fn lookup_tolerates_keys_that_are_not_lowercase() {
        let mixed = attrs(&[("displayName", &["Zoë"])]);
        let value = parse("[DISPLAYNAME]").unwrap().evaluate(&mixed).unwrap();
        assert_eq!(value, Some(Value::Text("Zoë".into())));
    }

    #[test]
    fn value_display_matches_entra() {
        assert_eq!(Value::Bool(true).to_string(), "True");
        assert_eq!(Value::Bool(false).to_string(), "False");
        assert_eq!(Value::Number(-3).to_string(), "-3");
        assert_eq!(Value::Text("x".into()).to_string(), "x");
    }

    #[test]
    fn join() {
        assert_eq!(
            text(r#"Join("@", [uid], "corp.example.test")"#),
            Some("jdoe@corp.example.test".into())
        );
        assert_eq!(
            text(r#"Join(" ", [givenName], [missing], [sn])"#),
            Some("Zoë Doe".into()),
            "nulls are skipped, not joined as empty"
        );
        assert_eq!(text(r#"Join("", "a", "b")"#), Some("ab".into()));
        assert_eq!(text(r#"Join([missing], "a", "b")"#), Some("ab".into()));
        assert_eq!(
            text(r#"Join("-", 1, IsPresent([uid]))"#),
            Some("1-True".into())
        );
        assert_eq!(eval(r#"Join(",", [missing], "")"#), None);
        assert_eq!(
            parse_error(r#"Join(",")"#),
            "position 1: Join needs at least 2 arguments (a separator and one value), but was \
             given 1"
        );
    }

    #[test]
    fn replace() {
        assert_eq!(
            text(r#"Replace([displayName], ",", " ")"#),
            Some("Doe  Zoë".into())
        );
        assert_eq!(
            text(r#"Replace("a.b.c", ".", "")"#),
            Some("abc".into()),
            "null replacement deletes"
        );
        assert_eq!(text(r#"Replace("abc", "", "x")"#), Some("abc".into()));
        assert_eq!(text(r#"Replace("a+b", "+", "\\")"#), Some("a\\b".into()));
        assert_eq!(text(r#"Replace("ø", "ø", "oe")"#), Some("oe".into()));
        assert_eq!(eval(r#"Replace([missing], "a", "b")"#), None);
        assert_eq!(
            eval(r#"Replace("aa", "a", "")"#),
            None,
            "empty result is null"
        );
        assert!(parse_error(r#"Replace("a", "b")"#)
            .contains("Replace needs exactly 3 arguments (source, find, replacement)"));
    }

    #[test]
    fn case_functions_handle_non_ascii() {
        assert_eq!(text("ToLower([l])"), Some("ærøskøbing".into()));
        assert_eq!(text("toupper([givenName])"), Some("ZOË".into()));
        assert_eq!(text("TOLOWER(\"ABC\")"), Some("abc".into()));
        assert_eq!(eval("ToLower([missing])"), None);
        assert_eq!(eval("ToUpper([missing])"), None);
        assert!(parse_error("ToLower()").contains("ToLower needs exactly 1 argument (source)"));
        assert!(parse_error("ToUpper(\"a\", \"b\")").contains("but was given 2"));
    }

    #[test]
    fn left_counts_characters() {
        assert_eq!(text("Left([givenName],1)"), Some("Z".into()));
        assert_eq!(text("Left([l], 3)"), Some("Ærø".into()));
        assert_eq!(text("Left([givenName], 99)"), Some("Zoë".into()));
        assert_eq!(text("Left([givenName], -1)"), Some("Zoë".into()));
        assert_eq!(text("Left([givenName], \" 2 \")"), Some("Zo".into()));
        assert_eq!(eval("Left([givenName], 0)"), None);
        assert_eq!(eval("Left([missing], 1)"), None);
        assert_eq!(eval("Left([givenName], [missing])"), None);
        assert_eq!(
            evaluation_error("Left([givenName], \"one\")"),
            "position 1: Left needs a whole number as its second argument (the number of \
             characters), but got \"one\""
        );
    }

    #[test]
    fn mid_counts_characters_from_one() {
        assert_eq!(text("Mid([l], 2, 3)"), Some("røs".into()));
        assert_eq!(text("Mid([givenName], 3, 1)"), Some("ë".into()));
        assert_eq!(text("Mid([givenName], 2, 100)"), Some("oë".into()));
        assert_eq!(eval("Mid([givenName], 10, 1)"), None);
        assert_eq!(eval("Mid([givenName], 1, 0)"), None);
        assert_eq!(eval("Mid([missing], 1, 1)"), None);
        assert!(evaluation_error("Mid([givenName], 0, 1)")
            .contains("Mid's start position counts from 1 (the first character), but got 0"));
        assert!(evaluation_error("Mid([givenName], 1, -2)")
            .contains("Mid's length must be 0 or more characters, but got -2"));
        assert!(parse_error("Mid([uid], 1)")
            .contains("Mid needs exactly 3 arguments (source, start, length), but was given 2"));
    }

    #[test]
    fn coalesce() {
        assert_eq!(
            text("Coalesce([missing], [empty], [uid], [sn])"),
            Some("jdoe".into())
        );
        assert_eq!(
            text("Coalesce(\"\", \"fallback\")"),
            Some("fallback".into())
        );
        assert_eq!(eval("Coalesce([missing])"), None);
        // Only the chosen value is computed, so a later bad argument does not fail it.
        assert_eq!(
            text("Coalesce([uid], BitAnd(\"x\", 1))"),
            Some("jdoe".into())
        );
        assert!(parse_error("Coalesce()").contains(
            "Coalesce needs at least 1 argument (the values to choose from), but was given 0"
        ));
    }

    #[test]
    fn trim_and_append() {
        assert_eq!(text("Trim(\"  Zoë \t\")"), Some("Zoë".into()));
        assert_eq!(eval("Trim(\"   \")"), None);
        assert_eq!(eval("Trim([missing])"), None);
        assert_eq!(
            text("Append([uid], \"@corp.example.test\")"),
            Some("jdoe@corp.example.test".into())
        );
        assert_eq!(text("Append([uid], [missing])"), Some("jdoe".into()));
        assert_eq!(eval("Append([missing], \"@corp\")"), None);
        assert!(parse_error("Append([uid])")
            .contains("Append needs exactly 2 arguments (source, suffix)"));
    }

    #[test]
    fn conditions() {
        assert_eq!(
            text("IIF(IsPresent([uid]), \"yes\", \"no\")"),
            Some("yes".into())
        );
        assert_eq!(
            text("IIF(IsPresent([missing]), \"yes\", \"no\")"),
            Some("no".into())
        );
        assert_eq!(
            text("IIF([missing], \"yes\", \"no\")"),
            Some("no".into()),
            "null is not true"
        );
        assert_eq!(text("iif(\"TRUE\", 1, 2)"), Some("1".into()));
        assert_eq!(eval("IIF(1, [missing], \"no\")"), None);
        // The untaken branch is not computed.
        assert_eq!(text("IIF(0, BitAnd(\"x\", 1), \"ok\")"), Some("ok".into()));
        assert!(evaluation_error("IIF(\"maybe\", 1, 2)").contains(
            "IIF needs a true/false value as its first argument, but got \"maybe\"; use True, \
             False or a number (0 is false)"
        ));
        assert!(parse_error("IIF(1, 2)")
            .contains("IIF needs exactly 3 arguments (condition, value if true, value if false)"));

        assert_eq!(eval("IsPresent([uid])"), Some(Value::Bool(true)));
        assert_eq!(eval("IsPresent([empty])"), Some(Value::Bool(false)));
        assert_eq!(eval("IsNullOrEmpty([empty])"), Some(Value::Bool(true)));
        assert_eq!(eval("IsNullOrEmpty([missing])"), Some(Value::Bool(true)));
        assert_eq!(eval("IsNullOrEmpty(\" \")"), Some(Value::Bool(false)));
        assert!(parse_error("IsPresent()").contains("IsPresent needs exactly 1 argument"));
        assert!(
            parse_error("IsNullOrEmpty(1, 2)").contains("IsNullOrEmpty needs exactly 1 argument")
        );
    }

    #[test]
    fn booleans_and_bits() {
        assert_eq!(eval("Not(IsPresent([uid]))"), Some(Value::Bool(false)));
        assert_eq!(eval("Not(\"false\")"), Some(Value::Bool(true)));
        assert_eq!(eval("Not(0)"), Some(Value::Bool(true)));
        assert_eq!(eval("Not([missing])"), None);
        assert!(evaluation_error("Not(\"abc\")")
            .contains("Not needs a true/false value as its first argument, but got \"abc\""));

        assert_eq!(eval("CBool(\"True\")"), Some(Value::Bool(true)));
        assert_eq!(eval("CBool(5)"), Some(Value::Bool(true)));
        assert_eq!(eval("CBool(\"0\")"), Some(Value::Bool(false)));
        assert_eq!(eval("CBool([missing])"), None);
        assert!(evaluation_error("CBool([uid])").contains("but got \"jdoe\""));

        assert_eq!(
            eval("BitAnd([userAccountControl], 2)"),
            Some(Value::Number(2))
        );
        assert_eq!(eval("BitAnd(\"512\", 2)"), Some(Value::Number(0)));
        assert_eq!(eval("BitAnd(12, 10)"), Some(Value::Number(8)));
        assert_eq!(eval("BitAnd([missing], 2)"), None);
        assert_eq!(
            eval("Not(BitAnd([userAccountControl], 2))"),
            Some(Value::Bool(false))
        );
        assert_eq!(
            evaluation_error("Join(\",\", BitAnd(\"abc\", 2))"),
            "position 11: BitAnd needs a whole number as its first argument (the value), but got \
             \"abc\""
        );
        assert!(evaluation_error("BitAnd(1, IsPresent([uid]))").contains(
            "BitAnd needs a whole number as its second argument (the mask), but got True"
        ));
        assert!(parse_error("BitAnd(1)")
            .contains("BitAnd needs exactly 2 arguments (two whole numbers)"));
        assert!(parse_error("Not()").contains("Not needs exactly 1 argument (a true/false value)"));
        assert!(parse_error("CBool()").contains("CBool needs exactly 1 argument"));
    }

    #[test]
    fn long_values_are_cut_short_in_messages() {
        let long = "x".repeat(500);
        let message = parse(&format!("BitAnd(\"{long}\", 1)"))
            .unwrap()
            .evaluate(&Attributes::new())
            .unwrap_err()
            .to_string();
        assert!(message.contains(&format!("\"{}\"…", "x".repeat(MAX_QUOTED))));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn nesting_and_whitespace() {
        let source = "\n Join( \" \" ,\tToUpper( Left( [givenName] , 1 ) ) ,\r\n \
                      ToLower(Replace([sn], \"D\", \"d\")) ) ";
        assert_eq!(text(source), Some("Z doe".into()));
        assert_eq!(
            text("Coalesce(IIF(IsNullOrEmpty([missing]), Append(Mid([l], 1, 4), \"!\"), \"x\"))"),
            Some("Ærøs!".into())
        );
    }

    #[test]
    fn attributes_are_lowercase_sorted_deduplicated() {
        let expr =
            parse("Join(\" \", [sn], [GivenName], ToLower([sn]), Coalesce([displayName], [CN]))")
                .unwrap();
        assert_eq!(expr.attributes(), ["cn", "displayname", "givenname", "sn"]);
        assert!(parse("\"constant\"").unwrap().attributes().is_empty());
    }

    #[test]
    fn syntax_errors_say_where_and_what() {
        assert_eq!(
            parse_error("Join(\",\", [uid], \"abc"),
            "position 18: unterminated text: the '\"' that starts here is never closed; end the \
             text with '\"' (write \\\" for a quotation mark inside it)"
        );
        assert!(parse_error("\"a\\").starts_with("position 1: unterminated text"));
        assert!(parse_error(r#""C:\temp""#).contains(
            "position 4: unknown escape \\t in a text; only \\\" (quotation mark) and \\\\ \
             (backslash) are escapes"
        ));
        assert!(parse_error("Join(\",\", [uid")
            .starts_with("position 11: unbalanced brackets: this '[' is never closed"));
        assert!(parse_error("[uid]]")
            .starts_with("position 6: unbalanced brackets: this ']' has no matching '['"));
        assert!(parse_error("Join(\",\", [uid)")
            .starts_with("position 15: unexpected ')' in an attribute name"));
        assert!(parse_error("[]").starts_with("position 1: empty attribute name []"));
        assert!(parse_error("[1abc]").contains("[1abc] is not a valid attribute name"));
        assert!(parse_error("ToLower([uid]")
            .starts_with("position 8: unbalanced parentheses: the '(' of ToLower is never closed"));
        assert!(parse_error("ToLower([uid]))")
            .starts_with("position 15: unbalanced parentheses: this ')' has no matching '('"));
        assert!(parse_error("[uid] [sn]").starts_with(
            "position 7: unexpected '[' after the end of the expression; to combine values, use \
             a function such as Join or Append"
        ));
        let stray_comma = parse_error("[uid], [sn]");
        assert!(stray_comma.starts_with("position 6: a ',' outside a function call"));
        assert!(parse_error("Join(\",\" [uid])").starts_with(
            "position 10: expected ',' or ')' after an argument of Join, but found '['"
        ));
        assert!(parse_error("Join(\",\", )").starts_with(
            "position 11: expected a value (a function call, an [attribute], a \"text\" or a \
             number) but found ')'"
        ));
        assert!(parse_error("Join(\",\",")
            .starts_with("position 10: the expression ends where a value was expected"));
        assert!(parse_error("displayName").starts_with(
            "position 1: displayName is neither a function call nor an attribute; write \
             functions as displayName(…), attributes in brackets like [displayName]"
        ));
        assert!(parse_error("99999999999999999999")
            .contains("the number 99999999999999999999 is out of range"));
        assert!(parse_error("-").contains("a '-' must be followed by digits"));
        assert!(parse_error("12abc")
            .starts_with("position 3: a number is directly followed by letters"));
        assert_eq!(parse("   "), Err(ExprError::Empty));
        assert!(parse_error("").starts_with("the expression is empty"));
    }

    #[test]
    fn unknown_function_lists_the_known_ones() {
        assert_eq!(
            parse_error("ToLower(Split([proxyAddresses], \";\"))"),
            "position 9: unknown function Split; the known functions are Append, BitAnd, CBool, \
             Coalesce, IIF, IsNullOrEmpty, IsPresent, Join, Left, Mid, Not, Replace, ToLower, \
             ToUpper, Trim"
        );
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        // "Ærøskøbing" is 10 characters but 13 bytes; the stray ']' is character 13.
        assert!(parse_error("\"Ærøskøbing\"]").starts_with("position 13:"));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = |depth: usize| format!("{}[uid]{}", "ToLower(".repeat(depth), ")".repeat(depth));
        assert_eq!(text(&deep(MAX_DEPTH)), Some("jdoe".into()));
        assert_eq!(
            parse(&deep(MAX_DEPTH + 1)),
            Err(ExprError::TooDeep {
                position: MAX_DEPTH * 8 + 1,
                limit: MAX_DEPTH
            })
        );
        assert!(parse_error(&deep(10_000))
            .starts_with("the expression is 90005 characters long, over the limit of 4096"));
        let long = format!("\"{}\"", "ø".repeat(MAX_LENGTH - 2));
        assert!(parse(&long).is_ok(), "the limit counts characters");
        assert_eq!(
            parse(&format!("\"{}\"", "a".repeat(MAX_LENGTH - 1))),
            Err(ExprError::TooLong {
                length: MAX_LENGTH + 1,
                limit: MAX_LENGTH
            })
        );
        assert!(parse_error(&deep(MAX_DEPTH + 1)).contains("nested more than 32 levels deep"));
    }

    /// Writes `text` as a string literal of the expression language.
    fn literal(text: &str) -> String {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        #[test]
        fn parse_never_panics(source in "\\PC{0,200}") {
            let _ = parse(&source);
        }

        #[test]
        fn parse_never_panics_on_expression_like_input(
            source in "[A-Za-z\\[\\]()\",\\\\ 0-9-]{0,120}"
        ) {
            if let Ok(expr) = parse(&source) {
                let _ = expr.evaluate(&person());
                let _ = expr.attributes();
            }
        }

        #[test]
        fn join_of_literals_equals_joined_strings(
            separator in "\\PC{0,4}",
            parts in proptest::collection::vec("\\PC{0,12}", 1..8),
        ) {
            let arguments: Vec<String> = parts.iter().map(|part| literal(part)).collect();
            let source = format!("Join({}, {})", literal(&separator), arguments.join(", "));
            let present: Vec<&str> =
                parts.iter().map(String::as_str).filter(|part| !part.is_empty()).collect();
            let expected = (!present.is_empty()).then(|| Value::Text(present.join(&separator)));
            let joined = parse(&source).unwrap().evaluate(&Attributes::new()).unwrap();
            prop_assert_eq!(joined, expected);
        }

        #[test]
        fn join_of_attributes_equals_joined_strings(
            parts in proptest::collection::vec("\\PC{1,12}", 1..8),
        ) {
            let source_attrs: Attributes = parts
                .iter()
                .enumerate()
                .map(|(index, part)| (format!("a{index}"), vec![part.clone()]))
                .collect();
            let references: Vec<String> =
                (0..parts.len()).map(|index| format!("[A{index}]")).collect();
            let source = format!("Join(\"|\", {})", references.join(","));
            let expr = parse(&source).unwrap();
            let joined = expr.evaluate(&source_attrs).unwrap();
            prop_assert_eq!(joined, Some(Value::Text(parts.join("|"))));
        }
    }
}
