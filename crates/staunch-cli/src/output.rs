//! Output for people and for programs: a column-aligning table printer and small formatting
//! helpers shared by the client subcommands.

use std::fmt::Write as _;

/// How a column's cells are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table with a header row, printed with each column as wide as its widest cell and two
/// spaces between columns. The last column is not padded, so lines carry no trailing spaces.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers, every column left-aligned.
    pub(crate) fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let align = vec![Align::Left; headers.len()];
        Table {
            headers,
            align,
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (by index); for numbers.
    pub(crate) fn right(mut self, columns: &[usize]) -> Table {
        for &c in columns {
            if let Some(a) = self.align.get_mut(c) {
                *a = Align::Right;
            }
        }
        self
    }

    /// Adds a row. Missing cells are blank; extra cells are kept and widen the table.
    pub(crate) fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Whether the table has no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in line.iter().enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                let pad = w - width(cell);
                let last = i + 1 == columns;
                if i > 0 {
                    text.push_str("  ");
                }
                match self.align.get(i).copied().unwrap_or(Align::Left) {
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(cell);
                    }
                    Align::Left => {
                        text.push_str(cell);
                        if !last {
                            text.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        }
        out
    }

    /// Prints the table to standard output.
    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

/// Display width of a cell: characters, with control characters (which [`cell`] escapes) and
/// combining marks not treated specially; good enough for names, numbers and ids.
fn width(text: &str) -> usize {
    text.chars().count()
}

/// Text made safe for one table cell: control characters (newlines, tabs, escape sequences)
/// are shown as Rust-style escapes so they cannot break the layout or the terminal.
pub(crate) fn cell(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A list of numbers as `1,2,3`.
pub(crate) fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Bytes for JSON: a string when they are UTF-8, otherwise `{"hex": "..."}`; `None` is null.
pub(crate) fn json_bytes(bytes: Option<&[u8]>) -> serde_json::Value {
    match bytes {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(text) => serde_json::Value::String(text.to_owned()),
            Err(_) => serde_json::json!({ "hex": hex(b) }),
        },
    }
}

/// Prints one JSON document (pretty) to standard output.
pub(crate) fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // A `Value` always serializes; keep the output a valid document regardless.
        Err(e) => println!("{{\"error\": {:?}}}", e.to_string()),
    }
}

/// A topic id the way Kafka's tools print one: the 16 bytes in URL-safe base64 without
/// padding (`Uuid.toString()` in Kafka), e.g. `AAAAAAAAAAAAAAAAAAAAAA` for the nil id.
pub(crate) fn kafka_uuid(bytes: &[u8; 16]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell_without_trailing_spaces() {
        let mut table = Table::new(["TOPIC", "PARTITIONS", "NOTE"]).right(&[1]);
        table.row(["orders", "3", "x"]);
        table.row(["a-much-longer-name", "12", ""]);
        assert_eq!(
            table.render(),
            "TOPIC               PARTITIONS  NOTE\n\
             orders                       3  x\n\
             a-much-longer-name          12\n"
        );
    }

    #[test]
    fn missing_and_extra_cells_and_wide_characters() {
        let mut table = Table::new(["A", "B"]);
        table.row(["é", "1", "extra"]);
        table.row(["long"]);
        assert_eq!(table.render(), "A     B\né     1  extra\nlong\n");
        assert!(!table.is_empty());
        assert!(Table::new(["A"]).render() == "A\n");
    }

    #[test]
    fn cells_escape_control_characters() {
        assert_eq!(cell("a\tb\nc"), "a\\tb\\nc");
        assert_eq!(cell("plain"), "plain");
    }

    #[test]
    fn helpers() {
        assert_eq!(joined(&[1, 2, 3]), "1,2,3");
        assert_eq!(joined::<i32>(&[]), "");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(json_bytes(None), serde_json::Value::Null);
        assert_eq!(json_bytes(Some(b"hi")), serde_json::json!("hi"));
        assert_eq!(
            json_bytes(Some(&[0xff, 0])),
            serde_json::json!({"hex": "ff00"})
        );
    }

    #[test]
    fn topic_ids_print_like_kafka() {
        assert_eq!(kafka_uuid(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        // Kafka: new Uuid(0x0123456789abcdefL, 0xfedcba9876543210L).toString()
        let bytes = [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ];
        assert_eq!(kafka_uuid(&bytes), "ASNFZ4mrze_-3LqYdlQyEA");
    }
}
