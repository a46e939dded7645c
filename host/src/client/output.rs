//! Text for people: aligned tables, and colour only when the stream is a
//! terminal and `NO_COLOR` is unset (<https://no-color.org>).

use std::io::IsTerminal;

use serde_json::Value;

/// Whether to colour what goes to stdout.
pub fn colour_stdout() -> bool {
    colour_allowed() && std::io::stdout().is_terminal()
}

fn colour_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `kiln: message` on stderr, the prefix red on a terminal.
pub fn error(message: &str) {
    if colour_allowed() && std::io::stderr().is_terminal() {
        eprintln!("\x1b[31mkiln:\x1b[0m {message}");
    } else {
        eprintln!("kiln: {message}");
    }
}

/// Prints a value as the server sent it, for `--json`.
pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// A status word, coloured by what it means when `colour` is on.
pub fn status(word: &str, colour: bool) -> String {
    let code = match word {
        "completed" | "active" | "yes" => "32",
        "failed" | "cancelled" | "disabled" | "no" => "31",
        "timeout" | "queued" | "running" => "33",
        _ => return word.to_owned(),
    };
    if colour {
        format!("\x1b[{code}m{word}\x1b[0m")
    } else {
        word.to_owned()
    }
}

/// Columns padded to their widest cell, two spaces apart, the header in
/// bold when `colour` is on. Widths count characters, not the escape codes
/// of coloured cells.
pub fn table(headers: &[&str], rows: &[Vec<String>], colour: bool) -> String {
    let visible = |cell: &str| strip_escapes(cell).chars().count();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(visible(cell));
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            text.push_str(cell);
            if i < last {
                text.push_str(&" ".repeat(width - visible(cell) + 2));
            }
        }
        text
    };
    let header = line(headers.iter().map(|h| (*h).to_owned()).collect());
    let mut out = if colour {
        format!("\x1b[1m{header}\x1b[0m\n")
    } else {
        format!("{header}\n")
    };
    for row in rows {
        out.push_str(&line(row.clone()));
        out.push('\n');
    }
    out
}

fn strip_escapes(cell: &str) -> String {
    let mut out = String::with_capacity(cell.len());
    let mut chars = cell.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON field as a cell: strings as they are, `null` or absent as `-`.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_colour() {
        let rows = vec![
            vec!["hello".into(), status("completed", true)],
            vec!["a-much-longer-name".into(), status("failed", false)],
        ];
        let text = table(&["NAME", "STATUS"], &rows, false);
        assert_eq!(
            text,
            "NAME                STATUS\n\
             hello               \x1b[32mcompleted\x1b[0m\n\
             a-much-longer-name  failed\n"
        );
        let bold = table(&["NAME"], &[], true);
        assert_eq!(bold, "\x1b[1mNAME\x1b[0m\n");
    }

    #[test]
    fn cells_show_absent_values_and_lists() {
        assert_eq!(cell(&Value::Null), "-");
        assert_eq!(cell(&serde_json::json!(["a", "b"])), "a,b");
        assert_eq!(cell(&serde_json::json!(3)), "3");
    }
}
