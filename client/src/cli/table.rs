//! A plain text table: columns left-aligned to their widest cell, two spaces
//! apart, no trailing blanks.

use std::fmt;

/// Rows of cells under a header.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut r: Vec<String> =
            cells.into_iter().map(Into::into).take(self.header.len()).collect();
        r.resize(self.header.len(), String::new());
        self.rows.push(r);
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(width(c));
            }
        }
        for (i, r) in std::iter::once(&self.header).chain(&self.rows).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let mut line = String::new();
            for (j, (c, w)) in r.iter().zip(&widths).enumerate() {
                if j > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat_n(' ', w - width(c)));
            }
            f.write_str(line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Columns line up on the widest cell (counting characters, not bytes),
    /// lines carry no trailing blanks, short rows are padded.
    #[test]
    fn cli_table_aligns_columns() {
        let mut t = Table::new(["A", "LONG HEADER", "C"]);
        t.row(["wide cell", "x", "1"]);
        t.row(["é", "yy"]);
        assert_eq!(
            t.to_string(),
            "A          LONG HEADER  C\nwide cell  x            1\né          yy"
        );
    }

    /// A table without rows is just its header.
    #[test]
    fn cli_table_header_only() {
        assert_eq!(Table::new(["X", "Y"]).to_string(), "X  Y");
    }
}
