//! Plain-text tables and timestamps for the terminal.

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

/// A duration on the command line (`--timeout 90s`, `20m`, `1h30m`): the templates' grammar,
/// one grammar everywhere.
pub fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    kiln_model::template::parse_duration(s)
}

/// `--wait [--timeout D]` on the commands that start workflows or report on them.
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct WaitArgs {
    /// Follow until every workflow ended; exit 0 only if all succeeded (1: one failed, timed
    /// out or was cancelled; 3: --timeout ran out first).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: stop waiting after this long (90s, 20m, 1h30m).
    #[arg(long, value_parser = duration_arg, requires = "wait")]
    pub timeout: Option<std::time::Duration>,
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }
}
