//! Plain-text tables for the terminal: a header row and left-aligned columns separated by
//! three spaces, as `kubectl get` prints them. No colours and no borders, so the output
//! can be piped to `grep` and `awk`.

/// A table being built row by row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline. Trailing spaces are
    /// trimmed.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|row| row[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                let pad = width - cell.chars().count() + 3;
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, for one object (`status`, `node show`).
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{:<width$}  {v}\n", format!("{k}:"), width = width + 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_trimmed() {
        let mut t = Table::new(&["NAME", "STATE", "AGE"]);
        t.row(vec!["node-1".into(), "Ready".into(), "5m".into()]);
        t.row(vec!["n2".into(), "NotReady".into()]);
        assert_eq!(
            t.render(),
            "NAME     STATE      AGE\nnode-1   Ready      5m\nn2       NotReady\n"
        );
    }

    #[test]
    fn an_empty_table_has_its_header() {
        assert_eq!(Table::new(&["ID", "ROLE"]).render(), "ID   ROLE\n");
    }

    #[test]
    fn wide_characters_count_once() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["é".into(), "x".into()]);
        assert_eq!(t.render(), "A   B\né   x\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("cluster", "lab".into()), ("nodes ready", "2/3".into())]);
        assert_eq!(text, "cluster:      lab\nnodes ready:  2/3\n");
    }
}
