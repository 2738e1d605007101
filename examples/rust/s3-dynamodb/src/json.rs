//! Just enough JSON for DynamoDB-JSON items: parse, index, write back.
//!
//! serde is not available offline here; a real function would use serde_json.

use std::fmt;

/// A JSON value; numbers keep their text (DynamoDB numbers are strings anyway).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object, members in order.
    Object(Vec<(String, Value)>),
}

impl Value {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string inside a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// An object from `(key, value)` members.
    pub fn object<const N: usize>(members: [(&str, Value); N]) -> Value {
        Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// A DynamoDB string attribute: `{"S": text}`.
    pub fn s(text: impl Into<String>) -> Value {
        Value::object([("S", Value::String(text.into()))])
    }

    /// A DynamoDB number attribute: `{"N": "<n>"}`.
    pub fn n(number: impl fmt::Display) -> Value {
        Value::object([("N", Value::String(number.to_string()))])
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => f.write_str(n),
            Value::String(s) => write_string(f, s),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    write!(f, "{}{item}", if i > 0 { ", " } else { "" })?;
                }
                f.write_str("]")
            }
            Value::Object(members) => {
                f.write_str("{")?;
                for (i, (key, value)) in members.iter().enumerate() {
                    f.write_str(if i > 0 { ", " } else { "" })?;
                    write_string(f, key)?;
                    write!(f, ": {value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// Parses a whole JSON document.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser { chars: text.chars().collect(), at: 0 };
    let value = parser.value()?;
    parser.skip_space();
    if parser.at != parser.chars.len() {
        return Err(format!("trailing characters at {}", parser.at));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn skip_space(&mut self) {
        while self.chars.get(self.at).is_some_and(|c| c.is_ascii_whitespace()) {
            self.at += 1;
        }
    }

    fn next(&mut self) -> Result<char, String> {
        let c = *self.chars.get(self.at).ok_or("unexpected end")?;
        self.at += 1;
        Ok(c)
    }

    fn expect(&mut self, word: &str) -> Result<(), String> {
        for want in word.chars() {
            if self.next()? != want {
                return Err(format!("expected {word:?} at {}", self.at));
            }
        }
        Ok(())
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_space();
        match self.chars.get(self.at).copied().ok_or("unexpected end")? {
            'n' => self.expect("null").map(|_| Value::Null),
            't' => self.expect("true").map(|_| Value::Bool(true)),
            'f' => self.expect("false").map(|_| Value::Bool(false)),
            '"' => self.string().map(Value::String),
            '[' => self.array(),
            '{' => self.object(),
            c if c == '-' || c.is_ascii_digit() => Ok(self.number()),
            c => Err(format!("unexpected {c:?} at {}", self.at)),
        }
    }

    fn number(&mut self) -> Value {
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|c| c.is_ascii_digit() || "+-.eE".contains(*c)) {
            self.at += 1;
        }
        Value::Number(self.chars[start..self.at].iter().collect())
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect("\"")?;
        let mut out = String::new();
        loop {
            match self.next()? {
                '"' => return Ok(out),
                '\\' => match self.next()? {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => out.push(self.escaped_char()?),
                    c => out.push(c), // \" \\ \/
                },
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits: String = (0..4).map(|_| self.next()).collect::<Result<_, _>>()?;
        u32::from_str_radix(&digits, 16).map_err(|e| e.to_string())
    }

    fn escaped_char(&mut self) -> Result<char, String> {
        let high = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&high) {
            self.expect("\\u")?;
            let low = self.hex4()?;
            0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
        } else {
            high
        };
        char::from_u32(code).ok_or_else(|| format!("bad \\u escape {code:x}"))
    }

    fn array(&mut self) -> Result<Value, String> {
        self.expect("[")?;
        let mut items = Vec::new();
        self.skip_space();
        if self.chars.get(self.at) == Some(&']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_space();
            match self.next()? {
                ',' => continue,
                ']' => return Ok(Value::Array(items)),
                c => return Err(format!("unexpected {c:?} in array")),
            }
        }
    }

    fn object(&mut self) -> Result<Value, String> {
        self.expect("{")?;
        let mut members = Vec::new();
        self.skip_space();
        if self.chars.get(self.at) == Some(&'}') {
            self.at += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_space();
            let key = self.string()?;
            self.skip_space();
            self.expect(":")?;
            members.push((key, self.value()?));
            self.skip_space();
            match self.next()? {
                ',' => continue,
                '}' => return Ok(Value::Object(members)),
                c => return Err(format!("unexpected {c:?} in object")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_dynamodb_json() {
        let text = r#"{"pk": {"S": "a\"b ✓ \u00e9 \ud83d\ude00"}, "n": {"N": "-1.5e3"}, "l": [true, null, []], "o": {}}"#;
        let value = parse(text).unwrap();
        assert_eq!(
            value.get("pk").and_then(|v| v.get("S")).and_then(Value::as_str),
            Some("a\"b ✓ é 😀")
        );
        assert_eq!(parse(&value.to_string()).unwrap(), value);
        assert!(parse("{\"a\": }").is_err() && parse("[1] x").is_err());
    }
}
