//! A minimal, read-only reader of SQLite database files: enough to list the rows of one table (rpm's
//! `Packages`), from the bytes of the file alone.
//!
//! Why not a SQLite library: the SBOM needs one table scan of a file that is already in memory, and
//! the bundled C SQLite would add a C build to every cold build of kiln for that. The format is
//! stable and documented (<https://www.sqlite.org/fileformat2.html>):
//!
//! - a 100-byte header (magic, page size, reserved bytes per page), then pages numbered from 1;
//! - each table is a b-tree of pages whose root page number the schema table (`sqlite_schema`,
//!   rooted at page 1) records; interior pages (type 5) point to children, leaf pages (type 13)
//!   hold cells `(payload length, rowid, payload)`, where a payload too large for the page spills
//!   into a chain of overflow pages;
//! - a payload is a record: a header of serial types (varints) and the values they describe.
//!
//! Only what a table scan needs is read: no indexes, no free lists. Every offset and page number is
//! checked against the file, loops over pages are bounded, and bad input is an [`Error`] naming
//! what is wrong, never a panic. A database in WAL mode whose `-wal` file still holds frames has
//! changes this reader does not see: the caller says so (rpm checkpoints on close, so an image's
//! database normally has none).

use std::fmt;

/// A value of a record column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Float(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// What is wrong with a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error(msg.into()))
}

/// An open database: the file's bytes and its page geometry.
#[derive(Debug)]
pub struct Db<'a> {
    data: &'a [u8],
    page_size: usize,
    /// The usable bytes of each page (page size less the reserved bytes at its end).
    usable: usize,
    pages: usize,
}

/// One row of a table: its rowid and its payload, reassembled from overflow pages when needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub rowid: i64,
    pub payload: Vec<u8>,
}

impl<'a> Db<'a> {
    /// Checks the header of `data`, a whole database file.
    pub fn open(data: &'a [u8]) -> Result<Db<'a>, Error> {
        if data.len() < 100 || &data[..16] != b"SQLite format 3\0" {
            return err("not an SQLite 3 database (no \"SQLite format 3\" header)");
        }
        let page_size = match u16::from_be_bytes([data[16], data[17]]) {
            1 => 65536,
            n if n >= 512 && n.is_power_of_two() => n as usize,
            n => return err(format!("page size {n} in the header is not a power of two from 512 to 65536")),
        };
        let reserved = data[20] as usize;
        let usable = page_size.saturating_sub(reserved);
        if usable < 480 {
            return err(format!("{reserved} reserved bytes leave {usable} usable bytes per page (SQLite needs 480)"));
        }
        if data[56..60] != [0, 0, 0, 1] && data[56..60] != [0, 0, 0, 0] {
            return err("the text encoding is UTF-16; only UTF-8 databases are read");
        }
        Ok(Db { data, page_size, usable, pages: data.len() / page_size })
    }

    fn page(&self, n: u32) -> Result<&'a [u8], Error> {
        let n = n as usize;
        if n == 0 || n > self.pages {
            return err(format!("page {n} is outside the file ({} pages)", self.pages));
        }
        Ok(&self.data[(n - 1) * self.page_size..n * self.page_size])
    }

    /// The root page of table `name` (compared case-insensitively, as SQL names are).
    pub fn table_root(&self, name: &str) -> Result<Option<u32>, Error> {
        for row in self.rows(1)? {
            let rec = record(&row.payload).map_err(|e| Error(format!("schema row {}: {e}", row.rowid)))?;
            let text = |i: usize| match rec.get(i) {
                Some(Value::Text(t)) => std::str::from_utf8(t).ok(),
                _ => None,
            };
            if text(0) == Some("table") && text(1).is_some_and(|n| n.eq_ignore_ascii_case(name)) {
                return match rec.get(3) {
                    Some(Value::Int(p)) if *p > 0 && *p <= u32::MAX as i64 => Ok(Some(*p as u32)),
                    other => err(format!("table {name} has no valid root page in the schema ({other:?})")),
                };
            }
        }
        Ok(None)
    }

    /// Every row of the table b-tree rooted at `root`, in rowid order.
    pub fn rows(&self, root: u32) -> Result<Vec<Row>, Error> {
        let mut out = Vec::new();
        // Depth-first with an explicit stack; every page is visited at most once, so a corrupt
        // file whose pointers loop cannot loop this.
        let mut stack = vec![root];
        let mut seen = vec![false; self.pages + 1];
        while let Some(n) = stack.pop() {
            if seen.get(n as usize).copied().unwrap_or(true) {
                return err(format!("page {n} is referenced twice or is outside the file: the b-tree is corrupt"));
            }
            seen[n as usize] = true;
            let page = self.page(n)?;
            // Page 1 starts with the 100-byte file header.
            let h = if n == 1 { 100 } else { 0 };
            let kind = page[h];
            let cells = u16::from_be_bytes([page[h + 3], page[h + 4]]) as usize;
            let (header_len, interior) = match kind {
                0x0d => (8, false),
                0x05 => (12, true),
                k => return err(format!("page {n}: type {k:#04x} is not a table b-tree page")),
            };
            let ptrs = h + header_len;
            if ptrs + 2 * cells > self.usable {
                return err(format!("page {n}: {cells} cells do not fit in the page"));
            }
            let cell_at = |i: usize| u16::from_be_bytes([page[ptrs + 2 * i], page[ptrs + 2 * i + 1]]) as usize;
            if interior {
                // Children are pushed in reverse, so the leftmost is read first: rowid order.
                let right = u32::from_be_bytes(page[h + 8..h + 12].try_into().unwrap());
                stack.push(right);
                for i in (0..cells).rev() {
                    let at = cell_at(i);
                    if at + 4 > self.usable {
                        return err(format!("page {n}: cell {i} is outside the page"));
                    }
                    stack.push(u32::from_be_bytes(page[at..at + 4].try_into().unwrap()));
                }
            } else {
                for i in 0..cells {
                    let row = self.leaf_cell(page, cell_at(i)).map_err(|e| Error(format!("page {n}, cell {i}: {e}")))?;
                    out.push(row);
                }
            }
        }
        Ok(out)
    }

    fn leaf_cell(&self, page: &[u8], at: usize) -> Result<Row, Error> {
        let usable = &page[..self.usable];
        let (len, a) = varint(usable, at)?;
        let (rowid, b) = varint(usable, at + a)?;
        let start = at + a + b;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= self.data.len())
            .ok_or_else(|| Error(format!("payload of {len} bytes is larger than the file")))?;
        // How much of the payload is on this page (the file format's X, M and K).
        let u = self.usable;
        let x = u - 35;
        let local = if len <= x {
            len
        } else {
            let m = ((u - 12) * 32 / 255) - 23;
            let k = m + (len - m) % (u - 4);
            if k <= x {
                k
            } else {
                m
            }
        };
        if start + local > usable.len() {
            return err("payload runs past the end of the page");
        }
        let mut payload = Vec::with_capacity(len);
        payload.extend_from_slice(&usable[start..start + local]);
        if local < len {
            if start + local + 4 > usable.len() {
                return err("the overflow page number runs past the end of the page");
            }
            let mut next = u32::from_be_bytes(usable[start + local..start + local + 4].try_into().unwrap());
            let mut hops = 0;
            while payload.len() < len {
                hops += 1;
                if next == 0 || hops > self.pages {
                    return err(format!("overflow chain ends after {} of {len} bytes", payload.len()));
                }
                let p = self.page(next)?;
                let take = (len - payload.len()).min(u - 4);
                payload.extend_from_slice(&p[4..4 + take]);
                next = u32::from_be_bytes(p[..4].try_into().unwrap());
            }
        }
        Ok(Row { rowid: rowid as i64, payload })
    }
}

/// A SQLite varint at `at`: (value, bytes used). Big-endian groups of 7 bits, the 9th byte whole.
fn varint(b: &[u8], at: usize) -> Result<(u64, usize), Error> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let Some(&byte) = b.get(at + i) else { return err("a varint runs past the end of its page") };
        if i == 8 {
            return Ok(((v << 8) | byte as u64, 9));
        }
        v = (v << 7) | (byte & 0x7f) as u64;
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    unreachable!("the loop returns by its 9th byte")
}

/// The columns of a record (a row's payload).
pub fn record(p: &[u8]) -> Result<Vec<Value<'_>>, Error> {
    let (header_len, mut at) = varint(p, 0)?;
    let header_len = header_len as usize;
    if header_len > p.len() || header_len < at {
        return err(format!("record header of {header_len} bytes in a {}-byte record", p.len()));
    }
    let mut types = Vec::new();
    while at < header_len {
        let (t, n) = varint(&p[..header_len], at)?;
        types.push(t);
        at += n;
    }
    let mut body = header_len;
    let mut out = Vec::with_capacity(types.len());
    for t in types {
        let size = match t {
            0 | 8 | 9 => 0,
            1..=4 => t as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return err(format!("reserved serial type {t}")),
            n => ((n - 12) / 2) as usize,
        };
        let Some(v) = p.get(body..body + size) else {
            return err(format!("a column of {size} bytes runs past the end of the record"));
        };
        body += size;
        out.push(match t {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                // Big-endian two's complement of `size` bytes.
                let mut x: i64 = if v[0] & 0x80 != 0 { -1 } else { 0 };
                for &byte in v {
                    x = (x << 8) | byte as i64;
                }
                Value::Int(x)
            }
            7 => Value::Float(f64::from_be_bytes(v.try_into().unwrap())),
            n if n % 2 == 0 => Value::Blob(v),
            _ => Value::Text(v),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05], 0).unwrap(), (5, 1));
        assert_eq!(varint(&[0x81, 0x00], 0).unwrap(), (128, 2));
        assert_eq!(varint(&[0xff; 9], 0).unwrap(), (u64::MAX, 9));
        assert!(varint(&[0x81], 0).is_err());
    }

    #[test]
    fn records() {
        // Header: 4 bytes (length, int8, text of 2, blob of 1), then the values.
        let r = [4, 1, 17, 14, 0xfe, b'h', b'i', 7];
        assert_eq!(record(&r).unwrap(), vec![Value::Int(-2), Value::Text(b"hi"), Value::Blob(&[7])]);
        assert!(record(&[4, 1, 17, 14, 0xfe]).is_err(), "truncated");
        assert!(record(&[2, 10]).is_err(), "reserved type");
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(Db::open(b"not a database").is_err());
        let mut h = vec![0u8; 4096];
        h[..16].copy_from_slice(b"SQLite format 3\0");
        h[16..18].copy_from_slice(&1000u16.to_be_bytes());
        assert!(Db::open(&h).unwrap_err().0.contains("page size 1000"));
        h[16..18].copy_from_slice(&4096u16.to_be_bytes());
        h[56..60].copy_from_slice(&[0, 0, 0, 1]);
        // Page 1 of type 0: not a table page.
        let db = Db::open(&h).unwrap();
        assert!(db.table_root("Packages").unwrap_err().0.contains("not a table b-tree page"));
        // An interior root whose child is itself.
        h[100] = 0x05;
        h[108..112].copy_from_slice(&1u32.to_be_bytes());
        assert!(Db::open(&h).unwrap().rows(1).unwrap_err().0.contains("referenced twice"));
    }
}
