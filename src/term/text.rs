//! Reading terms written in Erlang syntax, e.g. `{get, user, #{id => 1}}`.
//!
//! Covers what people type at a shell: atoms (bare or quoted), integers of any size, floats,
//! binaries `<<"text">>` and `<<1,2,3>>`, strings (lists of character codes), tuples, proper and
//! improper lists, and maps; plus what a `file:consult/1` file holds besides: `%` comments and
//! external funs `fun Module:Function/Arity` (kept as opaque terms). Used by the tests, by the
//! command line's `call`, and to read the TLS distribution option file
//! ([`crate::wire::tls`]).

use super::atom::Atom;
use super::value::Value;
use num_bigint::BigInt;

/// Parses one term; trailing whitespace and a final `.` are allowed.
pub fn parse_term(text: &str) -> Result<Value, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let value = p.term()?;
    p.skip_ws();
    if p.peek() == Some('.') {
        p.pos += 1;
        p.skip_ws();
    }
    if p.pos != p.chars.len() {
        return Err(p.error("unexpected text after the term"));
    }
    Ok(value)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn error(&self, what: &str) -> String {
        format!("{what} at character {}", self.pos + 1)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Skips whitespace and `%` comments (to the end of the line).
    fn skip_ws(&mut self) {
        loop {
            match self.peek() {
                Some(c) if c.is_whitespace() => self.pos += 1,
                Some('%') => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        let n = s.chars().count();
        if self.chars[self.pos..].iter().take(n).copied().eq(s.chars()) {
            self.pos += n;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), String> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.error(&format!("expected {s:?}")))
        }
    }

    fn term(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                Ok(Value::tuple(self.sequence('}')?))
            }
            Some('[') => self.list(),
            Some('#') => self.map(),
            Some('<') => self.binary(),
            Some('"') => {
                let s = self.quoted('"')?;
                Ok(Value::list(
                    s.chars().map(|c| Value::Int(c as i64)).collect(),
                ))
            }
            Some('\'') => {
                let s = self.quoted('\'')?;
                Atom::new(&s).map(Value::Atom).map_err(|e| e.to_string())
            }
            Some(c) if c.is_ascii_digit() || c == '-' => self.number(),
            Some(c) if c.is_lowercase() => {
                let name = self.bare_atom();
                if name == "fun" {
                    return self.external_fun();
                }
                Atom::new(&name).map(Value::Atom).map_err(|e| e.to_string())
            }
            _ => Err(self.error("expected a term")),
        }
    }

    fn bare_atom(&mut self) -> String {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '@' || c == '.')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// An atom, bare or quoted, as text.
    fn atom_text(&mut self) -> Result<String, String> {
        self.skip_ws();
        match self.peek() {
            Some('\'') => self.quoted('\''),
            Some(c) if c.is_lowercase() => Ok(self.bare_atom()),
            _ => Err(self.error("expected an atom")),
        }
    }

    /// `fun Module:Function/Arity`, after the `fun`.
    fn external_fun(&mut self) -> Result<Value, String> {
        let module = self.atom_text()?;
        self.expect(":")?;
        let function = self.atom_text()?;
        self.expect("/")?;
        let arity = match self.number()? {
            Value::Int(n) if (0..=255).contains(&n) => n as u8,
            other => return Err(self.error(&format!("{other:?} is not an arity"))),
        };
        Ok(Value::Opaque(Box::new(eetf::Term::from(
            eetf::ExternalFun {
                module: eetf::Atom::from(module),
                function: eetf::Atom::from(function),
                arity,
            },
        ))))
    }

    fn sequence(&mut self, close: char) -> Result<Vec<Value>, String> {
        let mut items = Vec::new();
        if self.eat(&close.to_string()) {
            return Ok(items);
        }
        loop {
            items.push(self.term()?);
            if self.eat(",") {
                continue;
            }
            self.expect(&close.to_string())?;
            return Ok(items);
        }
    }

    fn list(&mut self) -> Result<Value, String> {
        self.pos += 1;
        let mut items = Vec::new();
        if self.eat("]") {
            return Ok(Value::empty_list());
        }
        loop {
            items.push(self.term()?);
            if self.eat(",") {
                continue;
            }
            if self.eat("|") {
                let tail = self.term()?;
                self.expect("]")?;
                return Ok(match tail {
                    Value::List(rest) => {
                        items.extend(rest.into_vec());
                        Value::list(items)
                    }
                    tail => Value::ImproperList(Box::new((items.into_boxed_slice(), tail))),
                });
            }
            self.expect("]")?;
            return Ok(Value::list(items));
        }
    }

    fn map(&mut self) -> Result<Value, String> {
        self.expect("#{")?;
        let mut entries = Vec::new();
        if self.eat("}") {
            return Ok(Value::map(entries));
        }
        loop {
            let k = self.term()?;
            self.expect("=>")?;
            let v = self.term()?;
            entries.push((k, v));
            if self.eat(",") {
                continue;
            }
            self.expect("}")?;
            return Ok(Value::map(entries));
        }
    }

    fn binary(&mut self) -> Result<Value, String> {
        self.expect("<<")?;
        if self.eat(">>") {
            return Ok(Value::binary(b""));
        }
        self.skip_ws();
        if self.peek() == Some('"') {
            let s = self.quoted('"')?;
            self.expect(">>")?;
            return Ok(Value::binary(s.as_bytes()));
        }
        let mut bytes = Vec::new();
        loop {
            match self.number()? {
                Value::Int(n) if (0..=255).contains(&n) => bytes.push(n as u8),
                other => return Err(self.error(&format!("{other:?} is not a byte"))),
            }
            if self.eat(",") {
                continue;
            }
            self.expect(">>")?;
            return Ok(Value::binary_owned(bytes));
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated quote")),
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    out.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    self.pos += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let is_float = self.peek() == Some('.')
            && self
                .chars
                .get(self.pos + 1)
                .is_some_and(|c| c.is_ascii_digit());
        if is_float {
            self.pos += 1;
            while self
                .peek()
                .is_some_and(|c| c.is_ascii_digit() || matches!(c, 'e' | 'E' | '-' | '+'))
            {
                self.pos += 1;
            }
        }
        let text: String = self.chars[start..self.pos].iter().collect();
        if is_float {
            text.parse::<f64>()
                .map(Value::Float)
                .map_err(|_| self.error("bad float"))
        } else {
            text.parse::<BigInt>()
                .map(Value::integer)
                .map_err(|_| self.error("bad number"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_kind_of_term() {
        let v = parse_term(
            "{ok, 'Elixir.User', -12, 3.5, <<\"hi\">>, <<1,2>>, \"ab\", [1, 2 | 3], [a | [b]], #{id => 1}, 123456789012345678901234567890}.",
        )
        .unwrap();
        assert_eq!(
            format!("{v:?}"),
            "{ok,'Elixir.User',-12,3.5,<<\"hi\">>,<<1,2>>,[97,98],[1,2|3],[a,b],#{id => 1},123456789012345678901234567890}"
        );
    }

    #[test]
    fn reads_what_a_consulted_file_holds() {
        let v = parse_term(
            "% the TLS options\n[{server, [{certfile, \"/a b/c.pem\"}, % the certificate\n  {verify_fun, {fun inet_tls_dist:verify_client/3, []}}]},\n {client, []}].\n% end\n",
        )
        .unwrap();
        assert_eq!(
            format!("{v:?}"),
            format!(
                "[{{server,[{{certfile,{:?}}},{{verify_fun,{{fun 'inet_tls_dist':'verify_client'/3,[]}}}}]}},{{client,[]}}]",
                Value::list("/a b/c.pem".chars().map(|c| Value::Int(c as i64)).collect())
            )
        );
        assert_eq!(
            format!("{:?}", parse_term("fun 'my mod':'f'/0").unwrap()),
            "fun 'my mod':'f'/0"
        );
        assert!(
            parse_term("fun m:f")
                .unwrap_err()
                .contains("expected \"/\"")
        );
        assert!(parse_term("fun m:f/300").is_err());
        // A bare `fun` that is not followed by a module is still an error, not an atom.
        assert!(parse_term("{fun}").is_err());
    }

    #[test]
    fn reports_errors_with_a_position() {
        assert!(parse_term("{a, ").unwrap_err().contains("character"));
        assert!(parse_term("{a} b").unwrap_err().contains("after the term"));
        assert!(parse_term("<<300>>").is_err());
    }
}
