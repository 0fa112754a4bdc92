//! A JSON body as Node reads and writes it: the bytes of `JSON.stringify(JSON.parse(body))`,
//! which is what a sender (or a receiver's sample code) signs when it hashes
//! `JSON.stringify(request.body)` instead of the bytes it sends. Pure.
//!
//! Written here rather than taken from a JSON crate because the form is JavaScript's, not
//! JSON's: strings are UTF-16 (a lone surrogate escape is a valid string), numbers are
//! doubles written by `Number.prototype.toString` (done by `ryu-js`, made for exactly
//! that), an object's keys that are array indices come first in numeric order, a number
//! too large for a double becomes `null`, and a key given twice must be seen (a parser
//! that keeps the last value hides it). serde_json refuses lone surrogates and numbers out
//! of range, and merges duplicate keys.
//!
//! Two inputs Node would read but that are refused here, so that they are checked as raw
//! bytes only: a body that is not valid UTF-8 (Node would replace the bad bytes with
//! U+FFFD, so the signed text is not the text received), and nesting deeper than
//! `MAX_DEPTH`.

/// Deeper nesting is refused (Node would go further; no sender's payload does).
pub const MAX_DEPTH: usize = 128;

/// Why a body has no Node form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON as `JSON.parse` reads it (or not UTF-8, or nested too deeply).
    NotJson,
    /// An object gives one key twice: parsers disagree on what such a body says.
    DuplicateKey,
}

/// The bytes `JSON.stringify(JSON.parse(body))` gives, encoded as UTF-8.
pub fn stringify(body: &[u8]) -> Result<Vec<u8>, Problem> {
    let text = std::str::from_utf8(body).map_err(|_| Problem::NotJson)?;
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
        out: Vec::with_capacity(body.len()),
        keys: Vec::new(),
        duplicate: false,
    };
    p.skip_ws();
    p.value(0)?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(Problem::NotJson);
    }
    // Only for a body that is JSON otherwise: a body that is not is simply not JSON.
    if p.duplicate {
        return Err(Problem::DuplicateKey);
    }
    Ok(p.out)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    out: Vec<u8>,
    /// Scratch for the members of the objects being parsed: (key start, key end, member
    /// end) as offsets into `out`.
    keys: Vec<(usize, usize, usize)>,
    /// Whether an object gave a key twice.
    duplicate: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        // JSON's whitespace, and only it (JSON.parse refuses U+00A0, U+FEFF, ...).
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, b: u8) -> Result<(), Problem> {
        if self.peek() == Some(b) {
            self.i += 1;
            Ok(())
        } else {
            Err(Problem::NotJson)
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Problem> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            self.out.extend_from_slice(word);
            Ok(())
        } else {
            Err(Problem::NotJson)
        }
    }

    fn value(&mut self, depth: usize) -> Result<(), Problem> {
        match self.peek().ok_or(Problem::NotJson)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Problem::NotJson),
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::NotJson);
        }
        self.expect(b'[')?;
        self.out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            self.out.push(b']');
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(depth)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.out.push(b',');
                }
                Some(b']') => {
                    self.i += 1;
                    self.out.push(b']');
                    return Ok(());
                }
                _ => return Err(Problem::NotJson),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), Problem> {
        if depth > MAX_DEPTH {
            return Err(Problem::NotJson);
        }
        self.expect(b'{')?;
        self.out.push(b'{');
        let start = self.out.len();
        let first = self.keys.len();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            self.out.push(b'}');
            return Ok(());
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(Problem::NotJson);
            }
            let key_start = self.out.len();
            self.string()?;
            let key_end = self.out.len();
            self.skip_ws();
            self.expect(b':')?;
            self.out.push(b':');
            self.skip_ws();
            self.value(depth)?;
            self.keys.push((key_start, key_end, self.out.len()));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.out.push(b',');
                }
                Some(b'}') => {
                    self.i += 1;
                    break;
                }
                _ => return Err(Problem::NotJson),
            }
        }
        let members = self.keys.split_off(first);
        self.finish_object(start, members);
        self.out.push(b'}');
        Ok(())
    }

    /// Checks the keys of the object whose members were written from `start` on, and puts
    /// the array-index keys first as JavaScript does.
    fn finish_object(&mut self, start: usize, members: Vec<(usize, usize, usize)>) {
        // A key is written in one canonical form, so two keys are the same JavaScript
        // string exactly when their written forms are equal.
        let key = |&(ks, ke, _): &(usize, usize, usize)| ks..ke;
        let mut sorted: Vec<_> = members.iter().map(key).collect();
        sorted.sort_unstable_by(|a, b| self.out[a.clone()].cmp(&self.out[b.clone()]));
        if sorted
            .windows(2)
            .any(|w| self.out[w[0].clone()] == self.out[w[1].clone()])
        {
            self.duplicate = true;
        }
        let indices: Vec<Option<u32>> = members
            .iter()
            .map(|m| array_index(&self.out[key(m)]))
            .collect();
        if indices.iter().all(Option::is_none) {
            return;
        }
        // Index keys ascending, then the others in the order they came.
        let mut order: Vec<usize> = (0..members.len()).collect();
        order.sort_by_key(|&k| match indices[k] {
            Some(n) => (0, n, k),
            None => (1, 0, k),
        });
        let mut rewritten = Vec::with_capacity(self.out.len() - start);
        for (n, &k) in order.iter().enumerate() {
            if n > 0 {
                rewritten.push(b',');
            }
            let (ks, _, end) = members[k];
            rewritten.extend_from_slice(&self.out[ks..end]);
        }
        self.out.truncate(start);
        self.out.extend_from_slice(&rewritten);
    }

    /// A string, written as JSON.stringify writes it: `"`, `\` and control characters
    /// escaped (`\b \t \n \f \r` short, the rest `\u00xx`), lone surrogates as `\udxxx`,
    /// everything else as itself.
    fn string(&mut self) -> Result<(), Problem> {
        self.expect(b'"')?;
        self.out.push(b'"');
        loop {
            // Copy the run of characters that need no work.
            let run = self.s[self.i..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                .ok_or(Problem::NotJson)?;
            self.out.extend_from_slice(&self.s[self.i..self.i + run]);
            self.i += run;
            match self.s[self.i] {
                b'"' => {
                    self.i += 1;
                    self.out.push(b'"');
                    return Ok(());
                }
                b'\\' => self.escape()?,
                // A raw control character: JSON.parse refuses it.
                _ => return Err(Problem::NotJson),
            }
        }
    }

    fn escape(&mut self) -> Result<(), Problem> {
        self.i += 1; // the backslash
        let c = self.peek().ok_or(Problem::NotJson)?;
        self.i += 1;
        let unit = match c {
            b'"' => 0x22,
            b'\\' => 0x5c,
            b'/' => 0x2f,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => 0x0a,
            b'r' => 0x0d,
            b't' => 0x09,
            b'u' => self.hex4()?,
            _ => return Err(Problem::NotJson),
        };
        if (0xd800..0xdc00).contains(&unit) && self.s[self.i..].starts_with(b"\\u") {
            // A high surrogate followed by an escape: a pair when that one is low.
            let save = self.i;
            self.i += 2;
            let low = self.hex4()?;
            if (0xdc00..0xe000).contains(&low) {
                let scalar =
                    0x10000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00);
                let ch = char::from_u32(scalar).ok_or(Problem::NotJson)?;
                self.push_char(ch);
                return Ok(());
            }
            self.i = save;
        }
        self.write_unit(unit);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Problem> {
        let digits = self.s.get(self.i..self.i + 4).ok_or(Problem::NotJson)?;
        let mut v = 0u16;
        for &d in digits {
            let n = (d as char).to_digit(16).ok_or(Problem::NotJson)?;
            v = v << 4 | n as u16;
        }
        self.i += 4;
        Ok(v)
    }

    /// One UTF-16 code unit that is not half of a pair.
    fn write_unit(&mut self, unit: u16) {
        match unit {
            0x22 => self.out.extend_from_slice(b"\\\""),
            0x5c => self.out.extend_from_slice(b"\\\\"),
            0x08 => self.out.extend_from_slice(b"\\b"),
            0x09 => self.out.extend_from_slice(b"\\t"),
            0x0a => self.out.extend_from_slice(b"\\n"),
            0x0c => self.out.extend_from_slice(b"\\f"),
            0x0d => self.out.extend_from_slice(b"\\r"),
            u if u < 0x20 || (0xd800..0xe000).contains(&u) => {
                self.out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
            }
            u => match char::from_u32(u32::from(u)) {
                Some(ch) => self.push_char(ch),
                None => unreachable!("every code unit outside the surrogates is a char"),
            },
        }
    }

    fn push_char(&mut self, ch: char) {
        let mut buf = [0; 4];
        self.out
            .extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }

    /// A number, as the double JSON.parse reads and `Number.prototype.toString` writes;
    /// `null` for one past the doubles' range, as JSON.stringify writes Infinity.
    fn number(&mut self) -> Result<(), Problem> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let from = p.i;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i - from
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(Problem::NotJson),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(Problem::NotJson);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(Problem::NotJson);
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| Problem::NotJson)?;
        // Rust's parse is correctly rounded, as JavaScript's is; past the range it gives
        // infinity.
        let value: f64 = text.parse().map_err(|_| Problem::NotJson)?;
        if value.is_finite() {
            let mut buf = ryu_js::Buffer::new();
            self.out
                .extend_from_slice(buf.format_finite(value).as_bytes());
        } else {
            self.out.extend_from_slice(b"null");
        }
        Ok(())
    }
}

/// The array index a written key stands for (`"0"` to `"4294967294"`, no leading zeros),
/// if it is one.
fn array_index(written: &[u8]) -> Option<u32> {
    let digits = written.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if digits.is_empty()
        || digits.len() > 10
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
    {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    // 2^32 - 1 is the largest array length, so the largest index is one less.
    (n < u64::from(u32::MAX)).then_some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(body: &str) -> String {
        String::from_utf8(stringify(body.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn writes_compact_json_in_javascripts_order() {
        assert_eq!(
            node("{ \"b\" : 1,\n \"a\": [ true, false, null ] }"),
            r#"{"b":1,"a":[true,false,null]}"#
        );
        assert_eq!(
            node(r#"{"b":0,"10":1,"2":2,"01":3,"-1":4,"4294967294":5,"4294967295":6}"#),
            r#"{"2":2,"10":1,"4294967294":5,"b":0,"01":3,"-1":4,"4294967295":6}"#
        );
        assert_eq!(node(r#"{"x":{"1":1,"0":0}}"#), r#"{"x":{"0":0,"1":1}}"#);
    }

    #[test]
    fn numbers_are_doubles_as_javascript_writes_them() {
        for (given, written) in [
            ("1.0", "1"),
            ("-0", "0"),
            ("-0.0", "0"),
            ("1e21", "1e+21"),
            ("1E2", "100"),
            ("0.0000001", "1e-7"),
            ("0.1", "0.1"),
            ("123456789012345678901", "123456789012345680000"),
            ("9007199254740993", "9007199254740992"),
            ("1e400", "null"),
            ("-1e400", "null"),
            ("5e-400", "0"),
        ] {
            assert_eq!(
                node(&format!("[{given}]")),
                format!("[{written}]"),
                "{given}"
            );
        }
    }

    #[test]
    fn strings_are_escaped_as_json_stringify_escapes_them() {
        assert_eq!(node(r#"["\u00e9"]"#), "[\"é\"]");
        assert_eq!(
            node(r#"["\/\u0041\b\f\n\r\t\u0001\u001F\"\\"]"#),
            r#"["/A\b\f\n\r\t\u0001\u001f\"\\"]"#
        );
        assert_eq!(node(r#"["\ud83d\ude00"]"#), "[\"😀\"]");
        assert_eq!(
            node(r#"["\uD83D", "\ude00x", "\ud83d\u0041"]"#),
            r#"["\ud83d","\ude00x","\ud83dA"]"#
        );
        assert_eq!(node("[\"\u{7f}\u{2028}\"]"), "[\"\u{7f}\u{2028}\"]");
    }

    #[test]
    fn a_key_given_twice_is_seen_in_any_spelling() {
        for body in [
            r#"{"type":"x","type":"org-created"}"#,
            r#"{"type":"x","t\u0079pe":"y"}"#,
            r#"{"a":{"k":1,"k":2}}"#,
            r#"[{"1":1,"01":2,"1":3}]"#,
        ] {
            assert_eq!(
                stringify(body.as_bytes()),
                Err(Problem::DuplicateKey),
                "{body}"
            );
        }
        assert_eq!(node(r#"[{"k":1},{"k":2}]"#), r#"[{"k":1},{"k":2}]"#);
        // A body that is not JSON is that first, whatever keys it repeats.
        assert_eq!(stringify(br#"{"k":1,"k":2} x"#), Err(Problem::NotJson));
    }

    #[test]
    fn what_json_parse_refuses_is_refused() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        for body in [
            "",
            " ",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "-",
            "NaN",
            "[\"\t\"]",
            "[\"\\x\"]",
            "[\"\\u12\"]",
            "{a:1}",
            "'a'",
            "[1] x",
            "\u{feff}[]",
            "[\u{a0}1]",
            "tru",
            "nul",
            &deep,
        ] {
            assert_eq!(
                stringify(body.as_bytes()),
                Err(Problem::NotJson),
                "{body:?}"
            );
        }
        assert_eq!(stringify(b"[\"\xff\"]"), Err(Problem::NotJson));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert_eq!(node(&ok), ok);
        assert_eq!(node(" \"top\" "), "\"top\"");
    }
}
