//! Plain column-aligned tables for the terminal.

use crate::out::{outln, OutError};

/// Print `rows` under `header` on stdout, each column as wide as its widest cell.
pub fn print_table<const N: usize>(
    header: &[&str; N],
    rows: &[[String; N]],
) -> Result<(), OutError> {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        outln!("{}", padded.join("  ").trim_end())
    };
    line(header.to_vec())?;
    for row in rows {
        line(row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}
