//! Strings from the traced system made safe for a terminal.

/// A string from the traced system (path, process or container name), made safe for a terminal:
/// control characters and backslashes are escaped as `ls -b` does (`\033`, `\n`, `\\`), so a
/// file name can neither drive the terminal nor forge a report line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
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
