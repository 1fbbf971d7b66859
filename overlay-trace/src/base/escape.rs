//! Strings from the traced system made safe for a terminal.

/// A string from the traced system (path, process or container name), made safe for a terminal:
/// control characters and backslashes are escaped as `ls -b` does (`\033`, `\n`, `\\`), so a
/// file name can neither drive the terminal nor forge a report line. Invisible format
/// characters (bidirectional overrides, zero-width spaces and joiners) are shown as `\u{202e}`:
/// they would reorder or hide what is around them.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if invisible(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:03o}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode format characters that change how the text around them is shown (Cf, and the
/// separators that draw nothing).
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{ad}' | '\u{61c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
        | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}
