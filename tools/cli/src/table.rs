//! Aligned text tables for the `list` subcommands.

/// Lays out `rows` (the header first) in columns two spaces apart, each as
/// wide as its widest cell, without trailing spaces.
pub fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let rows = [
            ["NAME", "LUNS"].map(str::to_owned),
            ["disk-long", "0"].map(str::to_owned),
            ["d", ""].map(str::to_owned),
        ];
        assert_eq!(aligned(&rows), "NAME       LUNS\ndisk-long  0\nd\n");
    }
}
