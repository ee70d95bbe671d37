//! Text tables for people, laid out as docker lays out its own (`racker images`,
//! `postroj list-images`, probe reports).

/// Left-aligned columns separated by three spaces, the header first; the last column
/// is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, cell) in cells.into_iter().enumerate() {
            if i == last {
                out.push_str(&cell);
            } else {
                out.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up_under_the_header() {
        let rows = vec![vec!["a".to_owned(), "long value".to_owned(), "x".to_owned()]];
        assert_eq!(super::table(&["ONE", "TWO", "THREE"], &rows), "ONE   TWO          THREE\na     long value   x\n");
    }
}
