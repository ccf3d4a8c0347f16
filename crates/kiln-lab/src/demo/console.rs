//! What the demo prints: timestamped lines, indented command output, and on failure the
//! tail of the lab's logs.

use std::io::Write;
use std::time::Instant;

use super::progress::human_ms;
use crate::Lab;

/// Writes to stdout, ignoring errors: a closed terminal (SIGHUP) must not stop the cleanup.
pub fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes());
    let _ = o.flush();
}

pub fn say(clock: Instant, msg: &str) {
    out(&format!(
        "[{:>7}] {msg}\n",
        human_ms(clock.elapsed().as_millis() as u64)
    ));
}

pub fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("           {l}\n"))
        .collect::<String>()
}

/// On failure: the tail of kiln serve's log and of each unfinished machine's console.
pub fn show_logs(lab: &Lab) {
    let mut logs = vec![("kiln serve".to_string(), lab.log("kiln-serve.log"))];
    for m in &lab.machines {
        logs.push((format!("{} console", m.hostname), lab.serial_log(m)));
    }
    for (label, path) in logs {
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        let text = clean_console(&String::from_utf8_lossy(&text));
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut text = format!("---- {label} ({}), last lines:\n", path.display());
        for l in &lines[lines.len().saturating_sub(15)..] {
            text += &format!("  {l}\n");
        }
        out(&text);
    }
    if !lab.keep {
        out("(run with --keep to keep every log in the work directory)\n");
    }
}

/// Console text without escape sequences and control characters.
fn clean_console(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ params final-byte; other escapes: ESC + one char.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => out.push('\n'),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_is_cleaned() {
        assert_eq!(
            clean_console("\x1b[2J\x1b[01;01HSeaBIOS\r\nok\x07"),
            "SeaBIOS\n\nok"
        );
    }

    #[test]
    fn command_output_is_indented_under_its_line() {
        assert_eq!(indent("a\nb\n"), "           a\n           b\n");
    }
}
