//! Guest output, and text a guest can shape, on its way to a person's
//! terminal. A component's stdout is anyone's bytes: control sequences in it
//! could move the cursor, retitle the window, rewrite what was printed before
//! or, on some terminals, answer back as if typed. On a terminal, `reef logs`
//! and what `get`/`describe` print show them as `\xNN` instead; through a
//! pipe or into a file, the bytes pass as they are (JSON escapes them itself).

/// `text` as it may reach stdout: escaped when stdout is a terminal. For
/// what the CLI prints of objects (tables, YAML, events), whose strings may
/// carry a guest's words (a trap message, an error it caused).
pub fn shown(text: &str) -> String {
    shown_on(text, std::io::IsTerminal::is_terminal(&std::io::stdout()))
}

fn shown_on(text: &str, terminal: bool) -> String {
    if !terminal {
        return text.to_string();
    }
    String::from_utf8_lossy(&Escaper::default().escape(text.as_bytes())).into_owned()
}

/// Escapes control characters (C0 but tab and newline, DEL, and C1 as UTF-8
/// encodes them) across chunk boundaries.
#[derive(Default)]
pub struct Escaper {
    /// A lead byte of a two-byte UTF-8 sequence that ended the last chunk.
    carry: Option<u8>,
}

impl Escaper {
    pub fn escape(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        let mut bytes = self
            .carry
            .take()
            .into_iter()
            .chain(chunk.iter().copied())
            .peekable();
        while let Some(byte) = bytes.next() {
            match byte {
                b'\n' | b'\t' => out.push(byte),
                0x00..=0x1f | 0x7f => out.extend(format!("\\x{byte:02x}").bytes()),
                // U+0080..U+009F: C1 controls (CSI is U+009B).
                0xc2 => match bytes.peek() {
                    None => self.carry = Some(byte),
                    Some(&next) if (0x80..=0x9f).contains(&next) => {
                        bytes.next();
                        out.extend(format!("\\u{{{next:04x}}}").bytes());
                    }
                    Some(_) => out.push(byte),
                },
                _ => out.push(byte),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{shown_on, Escaper};

    #[test]
    fn printed_objects_are_escaped_only_for_a_terminal() {
        let text = "web-1  Running  trapped: \x1b]0;owned\x07\n";
        assert_eq!(shown_on(text, false), text);
        assert_eq!(
            shown_on(text, true),
            "web-1  Running  trapped: \\x1b]0;owned\\x07\n"
        );
    }

    fn escaped(chunks: &[&[u8]]) -> String {
        let mut escaper = Escaper::default();
        let out: Vec<u8> = chunks.iter().flat_map(|c| escaper.escape(c)).collect();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn control_sequences_are_shown_not_obeyed() {
        assert_eq!(escaped(&[b"a\x1b[2Jb\n"]), "a\\x1b[2Jb\n");
        assert_eq!(escaped(&[b"\x07\r\x7f\tz"]), "\\x07\\x0d\\x7f\tz");
        // UTF-8 text passes; a C1 CSI (U+009B) is escaped, also split.
        assert_eq!(escaped(&["é ✓".as_bytes()]), "é ✓");
        assert_eq!(escaped(&[b"x\xc2\x9b31m"]), "x\\u{009b}31m");
        assert_eq!(escaped(&[b"x\xc2", b"\x9b31m"]), "x\\u{009b}31m");
        assert_eq!(
            escaped(&[b"\xc2", "\u{a9}".as_bytes()[1..].as_ref()]),
            "\u{a9}"
        );
    }
}
