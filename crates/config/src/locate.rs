//! Best-effort line numbers for validation errors.
//!
//! serde gives us typed values without positions; rather than wrapping every
//! field in `toml::Spanned`, we find the `index`-th `[[table]]` header and the
//! first `key =` after it. Good enough for hand-written files, and when it
//! cannot tell, the error still names the field path.

pub(crate) fn line_of(text: &str, table: &str, index: usize, key: Option<&str>) -> Option<usize> {
    let header = format!("[[{table}]]");
    let single = format!("[{table}]");
    let mut seen = 0usize;
    let mut in_table = false;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            if in_table {
                return None; // key not found in our table
            }
            if t == header || t == single {
                if seen == index {
                    in_table = true;
                    if key.is_none() {
                        return Some(n + 1);
                    }
                }
                seen += 1;
            }
            continue;
        }
        if in_table {
            if let Some(k) = key {
                if let Some(rest) = t.strip_prefix(k) {
                    if rest.trim_start().starts_with('=') {
                        return Some(n + 1);
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::line_of;

    #[test]
    fn finds_the_key_in_the_right_table() {
        let t =
            "[gateway]\nlisten = 'x'\n\n[[user]]\nname = 'a'\n[[user]]\nname = 'b'\ngroups = []\n";
        assert_eq!(line_of(t, "user", 1, Some("groups")), Some(8));
        assert_eq!(line_of(t, "user", 0, Some("groups")), None);
        assert_eq!(line_of(t, "user", 1, None), Some(6));
        assert_eq!(line_of(t, "gateway", 0, Some("listen")), Some(2));
    }
}
